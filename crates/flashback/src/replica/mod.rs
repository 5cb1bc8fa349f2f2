//! The replica side of the replication protocol, as redis-server's own replicas speak it
//! (notes §1): handshake, PSYNC, the RDB transfer, then a stream of commands.
//!
//! Typestate keeps the modes apart: [`ReplicaConn`] can only handshake and [`ReplicaConn::psync`]
//! consumes it; a full resync yields an [`RdbTransfer`] whose [`RdbTransfer::save`] consumes it
//! and yields the [`ReplicationStream`]; the stream can only read commands and send ACKs. So no
//! code path can send a reply-producing command on the link after PSYNC (which gets a replica
//! disconnected, notes §1.4).
//!
//! One file per mode: `handshake` (connect, AUTH, REPLCONF, PSYNC and its reply), `rdb_transfer`
//! (the snapshot, sized or diskless, streamed to a sink and checked), `stream` (the command
//! stream and its ACKs). Cutting the stream into commands is not here: it is a pure decoder,
//! `flashback_format::resp::stream`, so it can be fuzzed without a socket. This file holds the
//! error every mode returns and the socket read they share. Every public item is re-exported
//! here, so callers name `crate::replica::X`.

mod handshake;
mod rdb_transfer;
mod stream;

pub use flashback_format::resp::stream::{
    BigEnd, StreamCommand, StreamItem, HEAD_ARG_MAX, PART_BYTES, STREAM_FROM,
};
pub use handshake::{HandshakeOptions, PsyncReply, ReplicaConn, Synced};
pub use rdb_transfer::{RdbReceived, RdbTransfer};
pub use stream::{Acker, ReplicationStream, StreamReader};

use bytes::BytesMut;
use flashback_format::resp::FrameError;
use std::time::Duration;
use tokio::io::AsyncReadExt;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("cannot connect to {addr}: {source}; check the host and port, and that the server is running")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "{addr}: authentication failed ({msg}); check the user and password in the source URL"
    )]
    Auth { addr: String, msg: String },
    #[error("{addr}: the server requires a password ({msg}); give it in the URL: redis://[user]:password@host:port")]
    NoAuth { addr: String, msg: String },
    #[error("{addr}: user '{user}' may not replicate ({msg}); grant it with: ACL SETUSER {user} +psync +replconf +ping")]
    Permission {
        addr: String,
        user: String,
        msg: String,
    },
    #[error("{addr}: the server refused {cmd} ({msg}); if your provider renamed the command, pass --psync-command NAME")]
    PsyncRefused {
        addr: String,
        cmd: String,
        msg: String,
    },
    /// `-LOADING`, `-NOMASTERLINK`, `-MASTERDOWN`: real replicas retry later, and so do we.
    #[error("{addr}: the server cannot serve a replica yet ({msg}); retrying")]
    NotReady { addr: String, msg: String },
    #[error("{addr}: no data for {secs} s (repl-timeout): the link is dead")]
    Timeout { addr: String, secs: u64 },
    #[error("{addr}: the server closed the replication link")]
    Closed { addr: String },
    #[error("{addr}: unexpected reply during the handshake: {what}")]
    Unexpected { addr: String, what: String },
    #[error("{addr}: protocol error on the replication link: {err}")]
    Protocol { addr: String, err: FrameError },
    #[error("{addr}: network error: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    /// A TLS failure, or plain text spoken to a TLS port: one line naming the fix. Not retried
    /// at the first connection: a wrong CA or certificate does not fix itself.
    #[error("{addr}: {msg}")]
    Tls { addr: String, msg: String },
    #[error("{addr}: the snapshot's trailer is wrong: {err}")]
    RdbCorrupt {
        addr: String,
        err: flashback_format::Error,
    },
    #[error("writing the snapshot: {0}")]
    RdbWrite(std::io::Error),
}

impl ReplicaError {
    /// Errors worth a reconnect with backoff. At the agent's first connection the others are
    /// fatal: a wrong password or a missing permission will not fix itself.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ReplicaError::NotReady { .. }
                | ReplicaError::Timeout { .. }
                | ReplicaError::Closed { .. }
                | ReplicaError::Io { .. }
                | ReplicaError::Connect { .. }
                | ReplicaError::Protocol { .. }
                | ReplicaError::RdbCorrupt { .. }
        )
    }
}

/// Drops the bare `\n` keepalives a primary sends while it prepares a snapshot.
pub(super) fn skip_newlines(buf: &mut BytesMut) {
    let n = buf.iter().take_while(|&&b| b == b'\n').count();
    if n > 0 {
        let _ = buf.split_to(n);
    }
}

/// One read into `buf` (growing it as needed), bounded by the link's timeout.
pub(super) async fn fill<R: AsyncReadExt + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    addr: &str,
    timeout: Duration,
) -> Result<usize, ReplicaError> {
    if buf.capacity() - buf.len() < 16 * 1024 {
        buf.reserve(256 * 1024);
    }
    match tokio::time::timeout(timeout, r.read_buf(buf)).await {
        Err(_) => Err(ReplicaError::Timeout {
            addr: addr.to_string(),
            secs: timeout.as_secs(),
        }),
        Ok(Err(source)) => Err(ReplicaError::Io {
            addr: addr.to_string(),
            source,
        }),
        Ok(Ok(0)) => Err(ReplicaError::Closed {
            addr: addr.to_string(),
        }),
        Ok(Ok(n)) => Ok(n),
    }
}
