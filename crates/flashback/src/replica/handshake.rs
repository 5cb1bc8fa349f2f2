//! Connecting as a replica: PING, AUTH, `REPLCONF` (pipelined as redis-server does), then
//! PSYNC and its reply, which decides what follows: a snapshot ([`RdbTransfer`]) or the
//! command stream straight away (+CONTINUE).

use super::rdb_transfer::RdbTransfer;
use super::stream::ReplicationStream;
use super::{fill, skip_newlines, ReplicaError};
use crate::client::RedisUrl;
use crate::net::{self, Stream};
use bytes::BytesMut;
use flashback_format::resp::{self, Frame, FrameError};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

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
    pub(super) stream: Stream,
    pub(super) buf: BytesMut,
    pub(super) addr: String,
    /// The ACL user, for naming it in a permission error.
    pub(super) user: String,
    pub(super) opts: HandshakeOptions,
}

impl ReplicaConn {
    /// Connects and performs PING, AUTH and REPLCONF (notes §1.1), pipelining as redis-server does.
    pub async fn connect(
        url: &RedisUrl,
        opts: HandshakeOptions,
    ) -> Result<ReplicaConn, ReplicaError> {
        let addr = format!("{}:{}", url.host, url.port);
        let stream = net::connect(&url.host, url.port, url.tls.as_ref(), opts.connect_timeout)
            .await
            .map_err(|e| match e {
                net::ConnectError::Tcp { addr, source } => ReplicaError::Connect { addr, source },
                net::ConnectError::Timeout { addr, .. } => ReplicaError::Connect {
                    addr,
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection timed out",
                    ),
                },
                net::ConnectError::Tls { addr, msg } => ReplicaError::Tls { addr, msg },
            })?;
        let user = url.user.clone().unwrap_or_else(|| "default".into());
        let mut c = ReplicaConn {
            stream,
            buf: BytesMut::with_capacity(256 * 1024),
            addr,
            user: user.clone(),
            opts,
        };

        // PING may be denied (NOAUTH before AUTH, NOPERM by ACL): real replicas accept that.
        // A plain link closed or answered with non-RESP bytes here is most likely a TLS port.
        c.write(&resp::encode_command(&["PING"])).await?;
        match c.read_reply().await {
            Err(e) if !c.stream.is_tls() && looks_like_tls_port(&e, &c.buf) => {
                return Err(ReplicaError::Tls {
                    msg: net::plain_to_tls_hint(&c.addr, &c.buf),
                    addr: c.addr,
                })
            }
            r => {
                r?;
            }
        }

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
                        rdb: RdbTransfer::new(self),
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
                    rdb: RdbTransfer::new(self),
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

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ReplicaError> {
        let addr = &self.addr;
        // The flush matters over TLS only: rustls may keep the last record of a write
        // buffered when the socket would block.
        let s = &mut self.stream;
        async {
            s.write_all(bytes).await?;
            s.flush().await
        }
        .await
        .map_err(|source| ReplicaError::Io {
            addr: addr.clone(),
            source,
        })
    }

    pub(super) async fn fill(&mut self) -> Result<usize, ReplicaError> {
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

fn looks_like_tls_port(e: &ReplicaError, buf: &[u8]) -> bool {
    match e {
        ReplicaError::Closed { .. } => true,
        ReplicaError::Protocol { .. } => net::is_tls_record(buf),
        ReplicaError::Io { source, .. } => source.kind() == std::io::ErrorKind::ConnectionReset,
        _ => false,
    }
}

/// What PSYNC led to.
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
