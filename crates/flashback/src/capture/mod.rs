//! Capture: attach to a source as a replica and write every record to the store.
//!
//! The parts, from the pure decisions out to the sockets and files:
//! - [`core`]: every decision of the capture loop (acks after fsyncs, heartbeats, evidence,
//!   uncertain intervals, pause, dead link) as a pure state machine; no I/O.
//! - [`state`]: follows the stream (offsets, SELECT, MULTI, GETACK, continue-or-new-generation).
//! - [`log`]: the agent's side of the store, a facade over [`tail`] (the open segment),
//!   [`generation`] (base + manifest), [`recover`] (after a crash or a full disk) and [`spool`]
//!   (spool accounting, metrics file).
//! - [`poll`]: the second connection that polls the source's own offset for evidence.
//! - [`sentinel`]: which node is the primary, asked of Sentinels before each session, and
//!   their failover events, which end a session so the loop follows the promoted replica.
//! - [`cluster`]: a Redis Cluster: the shards discovered (`cluster::topology`, pure), one
//!   capture loop per shard, each asking the cluster for its node before every session;
//!   `cluster::scale` adopts the shards the cluster gains while running.
//! - [`run`](run()) (in `run.rs`): the entry point: spool and uploader wiring, the reconnect
//!   loop; `session.rs` holds one connection (sync, then the stream loop around `core`).
//! - [`maintenance`]: compaction and retention scheduled beside capture, supervised.
//! - [`options`]: [`CaptureOptions`] and the defaults derived from the source.
//! - [`upload`], [`lease`]: shipping the spool to a remote store.
//!
//! Guarantee: the agent ACKs to the primary only offsets whose records are fsync'd, and the
//! tail is fsync'd at least every `core::FLUSH_EVERY` (100 ms). So `WAIT` on the primary means
//! "durably backed up", and a kill -9 loses nothing that was acknowledged.

pub mod cluster;
pub mod core;
mod generation;
pub mod log;
pub mod maintenance;
pub mod metrics;
pub mod options;
pub mod poll;
mod recover;
mod run;
pub mod sentinel;
mod session;
pub mod spool;
pub mod state;
mod tail;

pub use options::{default_name, default_spool, CaptureOptions};
pub use run::run;

use crate::replica::ReplicaError;
use crate::store::StoreError;
use nix::errno::Errno;
use std::future::Future;
use std::pin::Pin;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Format(#[from] flashback_format::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("replication stream: {0}")]
    State(#[from] state::StateError),
    #[error(transparent)]
    Sentinel(#[from] sentinel::SentinelError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error("{0}")]
    SecondWriter(String),
    #[error("{0}")]
    Unsupported(String),
}

impl CaptureError {
    /// The disk (or quota) under the store or spool is full.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            CaptureError::Io { source, .. } => Some(source),
            CaptureError::Store(StoreError::Io { source, .. }) => Some(source),
            CaptureError::Replica(ReplicaError::RdbWrite(source)) => Some(source),
            _ => None,
        };
        io.and_then(|e| e.raw_os_error())
            .is_some_and(|c| c == Errno::ENOSPC as i32 || c == Errno::EDQUOT as i32)
    }

    fn is_retryable(&self) -> bool {
        match self {
            CaptureError::Replica(e) => e.is_retryable(),
            // A stream we cannot interpret is the primary's doing; a fresh sync may clear it.
            CaptureError::State(_) => true,
            // Sentinels down or mid-reconfiguration, or a failover: the next ask may answer.
            CaptureError::Sentinel(e) => !matches!(e, sentinel::SentinelError::Syntax(_)),
            // Nodes down or mid-failover; a shard gone from the cluster may come back too. A
            // shard found to be part of another ends its loop (the cluster's run goes on).
            CaptureError::Cluster(e) => !matches!(
                e,
                cluster::ClusterError::Store(_) | cluster::ClusterError::Merged { .. }
            ),
            _ => false,
        }
    }
}

/// What the agent has made durable; for the demo, tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub online: bool,
    pub generation: Option<String>,
    pub durable_offset: u64,
}

/// The caller's shutdown future, pinned once and polled by every loop in turn.
type Shutdown<'a> = Pin<&'a mut (dyn Future<Output = ()> + Send)>;
