//! The command stream after PSYNC: a [`StreamReader`] that reads the socket and hands the
//! bytes to the pure framer (`flashback_format::resp::stream::Framer`), and an [`Acker`] that
//! can only send `REPLCONF ACK`. Split in two so the capture loop can read and ack from
//! separate places of its `select!`.

use super::handshake::ReplicaConn;
use super::{fill, ReplicaError, StreamItem};
use crate::net::Stream;
use flashback_format::resp::{self, stream::Framer};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

pub struct ReplicationStream {
    pub reader: StreamReader,
    pub acker: Acker,
}

/// The read half of the link. `fill` is cancellation-safe (bytes land in the buffer or not at
/// all), so the capture loop can `select!` on it next to its timers.
pub struct StreamReader {
    half: ReadHalf<Stream>,
    framer: Framer,
    addr: String,
    timeout: Duration,
}

impl StreamReader {
    /// Waits for more bytes; returns how many arrived.
    pub async fn fill(&mut self) -> Result<usize, ReplicaError> {
        fill(
            &mut self.half,
            self.framer.buf_mut(),
            &self.addr,
            self.timeout,
        )
        .await
    }

    /// The next complete command already buffered, or the next part of a big one, if any.
    pub fn try_next(&mut self) -> Result<Option<StreamItem>, ReplicaError> {
        self.framer.next().map_err(|err| ReplicaError::Protocol {
            addr: self.addr.clone(),
            err,
        })
    }

    pub fn buffered(&self) -> usize {
        self.framer.buffered()
    }
}

/// The write half: the only thing it can send is `REPLCONF ACK`.
pub struct Acker {
    half: WriteHalf<Stream>,
    addr: String,
}

impl Acker {
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub async fn ack(&mut self, offset: u64) -> Result<(), ReplicaError> {
        let cmd = resp::encode_command(&["REPLCONF", "ACK", &offset.to_string()]);
        let h = &mut self.half;
        // The flush matters over TLS only (see `ReplicaConn::write`).
        async {
            h.write_all(&cmd).await?;
            h.flush().await
        }
        .await
        .map_err(|source| ReplicaError::Io {
            addr: self.addr.clone(),
            source,
        })
    }
}

impl ReplicaConn {
    pub(super) fn into_stream(self) -> ReplicationStream {
        // `tokio::io::split` (a lock around one stream) rather than TcpStream's `into_split`: a
        // TLS session's reads and writes share its state, and the halves are used by one task.
        let (r, w) = tokio::io::split(self.stream);
        ReplicationStream {
            reader: StreamReader {
                half: r,
                framer: Framer::with_buffer(self.buf),
                addr: self.addr.clone(),
                timeout: self.opts.timeout,
            },
            acker: Acker {
                half: w,
                addr: self.addr,
            },
        }
    }
}
