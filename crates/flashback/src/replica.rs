//! The replica side of the replication protocol, as redis-server's own replicas speak it
//! (notes §1): handshake, PSYNC, the RDB transfer, then a stream of commands.
//!
//! Typestate keeps the modes apart: [`ReplicaConn`] can only handshake and [`ReplicaConn::psync`]
//! consumes it; a full resync yields an [`RdbTransfer`] whose [`RdbTransfer::save`] consumes it
//! and yields the [`ReplicationStream`]; the stream can only read commands and send ACKs. So no
//! code path can send a reply-producing command on the link after PSYNC (which gets a replica
//! disconnected, notes §1.4).
//!
//! Size: over ~600 lines because it still holds handshake, RDB transfer and stream framing; to split into replica/{handshake,rdb_transfer,stream}.rs; the split is issue 9's
//! (a house others can carry on), deferred so this round could land the trust and durability work.

use crate::client::RedisUrl;
use bytes::BytesMut;
use flashback_format::rdb;
use flashback_format::resp::stream::Framer;
pub use flashback_format::resp::stream::{
    BigEnd, StreamCommand, StreamItem, HEAD_ARG_MAX, PART_BYTES, STREAM_FROM,
};
use flashback_format::resp::{self, Frame, FrameError};
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

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

#[derive(Debug, Clone)]
pub struct HandshakeOptions {
    /// `PSYNC`, or the renamed command a managed service exposes instead.
    pub psync_command: String,
    /// Announced in `REPLCONF listening-port`. 0 by default: Sentinel discovers replicas from the
    /// primary's INFO and would try to connect to a real port, and an agent must never be a
    /// promotion candidate.
    pub listening_port: u16,
    pub connect_timeout: Duration,
    /// Silence on the link longer than this means it is dead (the primary PINGs every 10 s).
    pub timeout: Duration,
}

impl Default for HandshakeOptions {
    fn default() -> Self {
        HandshakeOptions {
            psync_command: "PSYNC".into(),
            listening_port: 0,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
        }
    }
}

/// The reply to PSYNC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PsyncReply {
    /// A full snapshot at `offset` follows.
    FullResync { replid: String, offset: u64 },
    /// The server answered like the legacy `SYNC`: a snapshot with no `+FULLRESYNC` line. Stock
    /// redis-server does this when PSYNC is renamed (it recognises PSYNC by the name the client
    /// typed). The position is then only in the snapshot's `repl-id`/`repl-offset` AUX fields,
    /// and the server will never answer +CONTINUE on this link.
    Sync,
    /// The backlog continues from the requested offset; `replid` is the primary's current id
    /// (psync2), which differs from the requested one after a failover or restart.
    Continue { replid: Option<String> },
}

/// A connection that has not yet sent PSYNC.
pub struct ReplicaConn {
    stream: TcpStream,
    buf: BytesMut,
    addr: String,
    /// The ACL user, for naming it in a permission error.
    user: String,
    opts: HandshakeOptions,
}

impl ReplicaConn {
    /// Connects and performs PING, AUTH and REPLCONF (notes §1.1), pipelining as redis-server does.
    pub async fn connect(
        url: &RedisUrl,
        opts: HandshakeOptions,
    ) -> Result<ReplicaConn, ReplicaError> {
        let addr = format!("{}:{}", url.host, url.port);
        let stream = match tokio::time::timeout(
            opts.connect_timeout,
            TcpStream::connect((url.host.as_str(), url.port)),
        )
        .await
        {
            Err(_) => {
                let source =
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out");
                return Err(ReplicaError::Connect { addr, source });
            }
            Ok(Err(source)) => return Err(ReplicaError::Connect { addr, source }),
            Ok(Ok(s)) => s,
        };
        stream.set_nodelay(true).ok();
        let user = url.user.clone().unwrap_or_else(|| "default".into());
        let mut c = ReplicaConn {
            stream,
            buf: BytesMut::with_capacity(256 * 1024),
            addr,
            user: user.clone(),
            opts,
        };

        // PING may be denied (NOAUTH before AUTH, NOPERM by ACL): real replicas accept that.
        c.write(&resp::encode_command(&["PING"])).await?;
        c.read_reply().await?;

        let mut pipeline = Vec::new();
        let mut expect = Vec::new();
        if let Some(pass) = &url.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = &url.user {
                args.push(u.as_bytes());
            }
            args.push(pass.as_bytes());
            pipeline.extend(resp::encode_command(&args));
            expect.push("AUTH");
        }
        let port = c.opts.listening_port.to_string();
        pipeline.extend(resp::encode_command(&["REPLCONF", "listening-port", &port]));
        expect.push("REPLCONF listening-port");
        pipeline.extend(resp::encode_command(&[
            "REPLCONF", "capa", "eof", "capa", "psync2",
        ]));
        expect.push("REPLCONF capa");
        c.write(&pipeline).await?;
        for what in expect {
            if let Frame::Error(e) = c.read_reply().await? {
                let msg = String::from_utf8_lossy(&e).into_owned();
                let addr = c.addr.clone();
                return Err(match what {
                    "AUTH" => ReplicaError::Auth { addr, msg },
                    _ if msg.starts_with("NOAUTH") => ReplicaError::NoAuth { addr, msg },
                    _ if msg.starts_with("NOPERM") => ReplicaError::Permission {
                        addr,
                        user: user.clone(),
                        msg,
                    },
                    // listening-port is informational: redis-server ignores an error for it too.
                    "REPLCONF listening-port" => continue,
                    _ => ReplicaError::Unexpected {
                        addr,
                        what: format!("{what}: {msg}"),
                    },
                });
            }
        }
        // Valkey 9+ sends its own snapshot format (VALKEY080, which can hold hash-field TTLs)
        // only to replicas that announce a version ≥ 9 in `REPLCONF version`, as its own
        // replicas do; without it the snapshot of such a dataset fails and the primary drops
        // us. Redis has no such option. A user denied INFO keeps the plain handshake.
        c.write(&resp::encode_command(&["INFO", "server"])).await?;
        if let Frame::Bulk(info) = c.read_reply().await? {
            let info = String::from_utf8_lossy(&info);
            if let Some(v) = info
                .lines()
                .find_map(|l| l.trim().strip_prefix("valkey_version:"))
            {
                c.write(&resp::encode_command(&["REPLCONF", "version", v.trim()]))
                    .await?;
                // An error here is ignored, as redis-server's replicas ignore listening-port's.
                c.read_reply().await?;
            }
        }
        Ok(c)
    }

    /// Sends PSYNC (`? -1` for a fresh start, else `<replid> <offset+1>`) and reads the answer.
    pub async fn psync(mut self, resume: Option<(&str, u64)>) -> Result<Synced, ReplicaError> {
        let (id, off) = match resume {
            Some((id, offset)) => (id.to_string(), (offset + 1).to_string()),
            None => ("?".to_string(), "-1".to_string()),
        };
        let cmd = self.opts.psync_command.clone();
        self.write(&resp::encode_command(&[cmd.as_str(), &id, &off]))
            .await?;
        loop {
            skip_newlines(&mut self.buf);
            match self.buf.first() {
                Some(b'$') => {
                    return Ok(Synced::Full {
                        reply: PsyncReply::Sync,
                        rdb: RdbTransfer { conn: self },
                    })
                }
                Some(_) => break,
                None => {
                    self.fill().await?;
                }
            }
        }
        let reply = self.read_reply().await?;
        let text = reply.text();
        let addr = self.addr.clone();
        match reply {
            Frame::Simple(_) if text.starts_with("FULLRESYNC") => {
                let mut parts = text.split_whitespace().skip(1);
                let (Some(replid), Some(offset)) = (
                    parts.next(),
                    parts.next().and_then(|o| o.parse::<u64>().ok()),
                ) else {
                    return Err(ReplicaError::Unexpected { addr, what: text });
                };
                let replid = replid.to_string();
                Ok(Synced::Full {
                    reply: PsyncReply::FullResync { replid, offset },
                    rdb: RdbTransfer { conn: self },
                })
            }
            Frame::Simple(_) if text.starts_with("CONTINUE") => {
                let replid = text.split_whitespace().nth(1).map(str::to_string);
                let reply = PsyncReply::Continue { replid };
                Ok(Synced::Continue {
                    reply,
                    stream: self.into_stream(),
                })
            }
            Frame::Error(_) => {
                let msg = text;
                Err(if msg.starts_with("NOPERM") {
                    ReplicaError::Permission {
                        addr,
                        user: self.user.clone(),
                        msg,
                    }
                } else if msg.starts_with("NOAUTH") {
                    ReplicaError::NoAuth { addr, msg }
                } else if msg.starts_with("LOADING")
                    || msg.starts_with("NOMASTERLINK")
                    || msg.starts_with("MASTERDOWN")
                {
                    ReplicaError::NotReady { addr, msg }
                } else {
                    ReplicaError::PsyncRefused { addr, cmd, msg }
                })
            }
            _ => Err(ReplicaError::Unexpected {
                addr,
                what: format!("{cmd} answered {text:?}"),
            }),
        }
    }

    fn into_stream(self) -> ReplicationStream {
        let (r, w) = self.stream.into_split();
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

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ReplicaError> {
        let addr = &self.addr;
        self.stream
            .write_all(bytes)
            .await
            .map_err(|source| ReplicaError::Io {
                addr: addr.clone(),
                source,
            })
    }

    async fn fill(&mut self) -> Result<usize, ReplicaError> {
        fill(
            &mut self.stream,
            &mut self.buf,
            &self.addr,
            self.opts.timeout,
        )
        .await
    }

    /// One reply, skipping the bare `\n` keepalives a primary sends while it prepares a snapshot.
    async fn read_reply(&mut self) -> Result<Frame, ReplicaError> {
        loop {
            skip_newlines(&mut self.buf);
            match resp::check(&self.buf) {
                Ok(n) => {
                    let f = self.buf.split_to(n).freeze();
                    return resp::parse(&f).map_err(|err| ReplicaError::Protocol {
                        addr: self.addr.clone(),
                        err,
                    });
                }
                Err(FrameError::Incomplete) => {
                    self.fill().await?;
                }
                Err(err) => {
                    return Err(ReplicaError::Protocol {
                        addr: self.addr.clone(),
                        err,
                    })
                }
            }
        }
    }
}

fn skip_newlines(buf: &mut BytesMut) {
    let n = buf.iter().take_while(|&&b| b == b'\n').count();
    if n > 0 {
        let _ = buf.split_to(n);
    }
}

async fn fill<R: AsyncReadExt + Unpin>(
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

pub enum Synced {
    Full {
        reply: PsyncReply,
        rdb: RdbTransfer,
    },
    Continue {
        reply: PsyncReply,
        stream: ReplicationStream,
    },
}

/// The snapshot that follows +FULLRESYNC.
pub struct RdbTransfer {
    conn: ReplicaConn,
}

/// What arrived.
#[derive(Debug, Clone)]
pub struct RdbReceived {
    pub len: u64,
    /// Diskless (`$EOF:<mark>`) rather than sized (`$<len>`).
    pub diskless: bool,
    pub info: rdb::RdbInfo,
}

/// Bytes held back from the sink until the end is known: the 40-byte EOF mark of a diskless
/// transfer, plus the RDB's 9-byte trailer (0xFF, then the CRC-64 that excludes itself).
const HOLD: usize = 49;

impl RdbTransfer {
    /// Streams the snapshot into `sink` (never holding it whole in memory), checks its CRC-64
    /// trailer, and returns the command stream that follows.
    pub async fn save<W: Write>(
        mut self,
        sink: &mut W,
    ) -> Result<(ReplicationStream, RdbReceived), ReplicaError> {
        let c = &mut self.conn;
        // Header: `$<len>\r\n` or `$EOF:<40 bytes>\r\n`, after any number of `\n` keepalives.
        let header = loop {
            skip_newlines(&mut c.buf);
            if let Some(i) = c.buf.windows(2).position(|w| w == b"\r\n") {
                let line = c.buf.split_to(i + 2);
                break line[..i].to_vec();
            }
            if c.buf.len() > 1024 {
                return Err(ReplicaError::Unexpected {
                    addr: c.addr.clone(),
                    what: "no snapshot header after FULLRESYNC".into(),
                });
            }
            c.fill().await?;
        };
        let bad = |c: &ReplicaConn| ReplicaError::Unexpected {
            addr: c.addr.clone(),
            what: format!("bad snapshot header {:?}", String::from_utf8_lossy(&header)),
        };
        let (mark, mut remaining) = match header.strip_prefix(b"$EOF:") {
            Some(m) if m.len() == 40 => (Some(m.to_vec()), u64::MAX),
            Some(_) => return Err(bad(c)),
            None => {
                let n = header
                    .strip_prefix(b"$")
                    .and_then(|n| std::str::from_utf8(n).ok())
                    .and_then(|n| n.parse::<u64>().ok());
                (None, n.ok_or_else(|| bad(c))?)
            }
        };
        let mut crc = 0u64;
        let mut held: Vec<u8> = Vec::with_capacity(HOLD * 2);
        let mut prefix: Vec<u8> = Vec::new();
        let mut total: u64 = 0;
        loop {
            if c.buf.is_empty() {
                c.fill().await?;
            }
            let take = (c.buf.len() as u64).min(remaining) as usize;
            let chunk = c.buf.split_to(take);
            remaining -= take as u64;
            if prefix.len() < 4096 {
                prefix.extend_from_slice(&chunk[..chunk.len().min(4096 - prefix.len())]);
            }
            held.extend_from_slice(&chunk);
            if held.len() > HOLD {
                let out = held.len() - HOLD;
                crc = rdb::crc64(crc, &held[..out]);
                sink.write_all(&held[..out])
                    .map_err(ReplicaError::RdbWrite)?;
                total += out as u64;
                held.drain(..out);
            }
            match &mark {
                None if remaining == 0 => break,
                Some(m) if held.len() >= 40 && held.ends_with(m) => {
                    held.truncate(held.len() - 40);
                    break;
                }
                _ => {}
            }
        }
        // `held` now ends with the 8 CRC bytes (and the 0xFF EOF opcode before them).
        let addr = c.addr.clone();
        if held.len() < 9 {
            let err = flashback_format::Error::corrupt(
                "snapshot",
                total,
                "snapshot shorter than an RDB trailer",
            );
            return Err(ReplicaError::RdbCorrupt { addr, err });
        }
        let body = held.len().saturating_sub(8);
        crc = rdb::crc64(crc, &held[..body]);
        sink.write_all(&held).map_err(ReplicaError::RdbWrite)?;
        total += held.len() as u64;
        let mut trailer = [0u8; 9];
        // HOLD leaves at least 9 bytes here once the 40-byte mark is cut, unless the whole
        // transfer was shorter, which the check above rejects.
        if held.len() >= 9 {
            trailer.copy_from_slice(&held[held.len() - 9..]);
        }
        rdb::check_trailer("snapshot", total, crc, &trailer).map_err(|err| {
            ReplicaError::RdbCorrupt {
                addr: addr.clone(),
                err,
            }
        })?;
        let info =
            rdb::peek("snapshot", &prefix).map_err(|err| ReplicaError::RdbCorrupt { addr, err })?;
        let received = RdbReceived {
            len: total,
            diskless: mark.is_some(),
            info,
        };
        Ok((self.conn.into_stream(), received))
    }
}

pub struct ReplicationStream {
    pub reader: StreamReader,
    pub acker: Acker,
}

/// The read half of the link. `fill` is cancellation-safe (bytes land in the buffer or not at
/// all), so the capture loop can `select!` on it next to its timers.
pub struct StreamReader {
    half: OwnedReadHalf,
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
    half: OwnedWriteHalf,
    addr: String,
}

impl Acker {
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub async fn ack(&mut self, offset: u64) -> Result<(), ReplicaError> {
        let cmd = resp::encode_command(&["REPLCONF", "ACK", &offset.to_string()]);
        self.half
            .write_all(&cmd)
            .await
            .map_err(|source| ReplicaError::Io {
                addr: self.addr.clone(),
                source,
            })
    }
}
