//! Our side of the replication link to the private server: we play its master. The handshake
//! (answer PING/AUTH/REPLCONF, claim a full resync under a fresh replid), the base streamed as
//! the sync payload with its CRC-64 checked on the way, the records' exact bytes with the
//! SELECTs they need ([`MasterLink`], a [`RecordSink`]), and the ACKs read back.

use super::super::keys::{Filter, Verdict};
use super::super::plan::RestorePlan;
use super::super::reader::RecordSink;
use super::super::RestoreError;
use super::CONNECT_TIMEOUT;
use super::SKIPPED;
use crate::client::Client;
use crate::progress::{Phase, Progress, Unit};
use crate::redis_server::RedisServer;
use crate::store::{Store, StoreError};
use bytes::BytesMut;
use flashback_format::rdb;
use flashback_format::resp::{self, Frame, FrameError};
use flashback_format::segment::{Fragment, Item, Record};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use std::hash::{BuildHasher, Hasher};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why the link to the private server failed before any data went over it.
#[derive(Debug, thiserror::Error)]
pub(super) enum LinkError {
    #[error("the replica went silent")]
    Silent,
    #[error("the replica closed the connection")]
    Closed,
    #[error("the replica sent something other than a command")]
    NotACommand,
    #[error("unexpected command {0}")]
    Unexpected(String),
    #[error(transparent)]
    Protocol(#[from] FrameError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Frames from the replica. It sends RESP arrays, plus bare `\n` keepalives while it loads.
pub(super) struct FrameReader {
    pub(super) rd: OwnedReadHalf,
    pub(super) buf: BytesMut,
}

pub(super) enum Incoming {
    Frame(Frame),
    Keepalive,
}

impl FrameReader {
    async fn next(&mut self) -> Result<Option<Incoming>, LinkError> {
        loop {
            if self.buf.first() == Some(&b'\n') {
                let _ = self.buf.split_to(1);
                return Ok(Some(Incoming::Keepalive));
            }
            match resp::check(&self.buf) {
                Ok(n) => {
                    let f = self.buf.split_to(n).freeze();
                    return Ok(Some(Incoming::Frame(resp::parse(&f)?)));
                }
                Err(FrameError::Incomplete) => {}
                Err(e) => return Err(e.into()),
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// Makes `server` a replica of a master port of ours and answers its handshake: the link
/// every engine run (a restore, the warm compactor) feeds a base and records through, and an
/// admin connection to the server. One place, so the two cannot drift in how they attach.
pub(super) async fn attach(
    server: &RedisServer,
) -> Result<(FrameReader, BufWriter<OwnedWriteHalf>, Client), RestoreError> {
    let io = |what: &str, e: std::io::Error| RestoreError::engine(server, format!("{what}: {e}"));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| io("cannot listen on 127.0.0.1", e))?;
    let port = listener.local_addr().map_err(|e| io("listener", e))?.port();
    let mut admin = server.client().await?;
    admin
        .ok(&["REPLICAOF", "127.0.0.1", &port.to_string()])
        .await?;
    let (stream, _) = match tokio::time::timeout(CONNECT_TIMEOUT, listener.accept()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(io("accepting the replica", e)),
        Err(_) => {
            return Err(RestoreError::engine(
                server,
                "it never connected to the engine's master port",
            ))
        }
    };
    drop(listener);
    stream.set_nodelay(true).ok();
    let (rd, wr) = stream.into_split();
    let mut rd = FrameReader {
        rd,
        buf: BytesMut::with_capacity(4096),
    };
    let mut wr = BufWriter::with_capacity(256 * 1024, wr);

    handshake(&mut rd, &mut wr)
        .await
        .map_err(|e| RestoreError::engine(server, format!("replication handshake: {e}")))?;
    Ok((rd, wr, admin))
}

/// A fresh replica says PING, maybe AUTH, REPLCONF…, then PSYNC. We accept it all and answer
/// PSYNC with a full resync at offset 0 under a new random replid.
pub(super) async fn handshake(
    rd: &mut FrameReader,
    wr: &mut BufWriter<OwnedWriteHalf>,
) -> Result<(), LinkError> {
    loop {
        let argv = match tokio::time::timeout(CONNECT_TIMEOUT, rd.next()).await {
            Err(_) => return Err(LinkError::Silent),
            Ok(r) => match r? {
                None => return Err(LinkError::Closed),
                Some(Incoming::Keepalive) => continue,
                Some(Incoming::Frame(f)) => resp::argv(f).ok_or(LinkError::NotACommand)?,
            },
        };
        let name = argv
            .first()
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        let reply: Vec<u8> = match name.as_slice() {
            b"PING" => b"+PONG\r\n".to_vec(),
            b"AUTH" | b"REPLCONF" => b"+OK\r\n".to_vec(),
            b"PSYNC" | b"SYNC" => format!("+FULLRESYNC {} 0\r\n", random_replid()).into_bytes(),
            other => return Err(LinkError::Unexpected(crate::show::key(other))),
        };
        wr.write_all(&reply).await?;
        wr.flush().await?;
        if name == b"PSYNC" || name == b"SYNC" {
            return Ok(());
        }
    }
}

/// Streams the base as the sync payload (`$<len>\r\n<bytes>`), checking its RDB trailer CRC
/// on the way. A bad CRC is reported naming the object (the replica would refuse it too).
pub(super) async fn send_base(
    store: &Store,
    plan: &RestorePlan,
    w: &mut BufWriter<OwnedWriteHalf>,
    server: &RedisServer,
    progress: &Progress,
) -> Result<u64, RestoreError> {
    let key = plan.base_key.as_ref();
    let got = store
        .os
        .get(&plan.base_key)
        .await
        .map_err(StoreError::from)?;
    let size = got.meta.size;
    progress.begin(Phase::Fetch, Unit::Bytes, Some(size));
    let send_err =
        |e: std::io::Error| RestoreError::engine(server, format!("sending the base: {e}"));
    w.write_all(format!("${size}\r\n").as_bytes())
        .await
        .map_err(send_err)?;
    let mut crc = LaggingCrc::default();
    let mut chunks = got.into_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(StoreError::from)?;
        crc.update(&chunk);
        w.write_all(&chunk).await.map_err(send_err)?;
        progress.add(chunk.len() as u64);
    }
    w.flush().await.map_err(send_err)?;
    if crc.total != size {
        return Err(RestoreError::Log {
            key: key.to_string(),
            what: format!("read {} bytes, the store listed {size}", crc.total),
        });
    }
    rdb::check_trailer(key, size, crc.crc, &crc.trailer())?;
    Ok(size)
}

/// Sends a base written beside the server (a key-level restore's filtered base) as the sync
/// payload. Its CRC was computed as it was written; the source's was checked as it was read.
pub(super) async fn send_local_base(
    path: &std::path::Path,
    w: &mut BufWriter<OwnedWriteHalf>,
    server: &RedisServer,
    progress: &Progress,
) -> Result<u64, RestoreError> {
    let io = |e: std::io::Error| RestoreError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let size = file.metadata().await.map_err(io)?.len();
    progress.begin(Phase::Fetch, Unit::Bytes, Some(size));
    let send_err =
        |e: std::io::Error| RestoreError::engine(server, format!("sending the base: {e}"));
    w.write_all(format!("${size}\r\n").as_bytes())
        .await
        .map_err(send_err)?;
    let n = tokio::io::copy(&mut file, w).await.map_err(send_err)?;
    w.flush().await.map_err(send_err)?;
    progress.add(n);
    if n != size {
        return Err(RestoreError::engine(
            server,
            format!("{}: sent {n} bytes of {size}", path.display()),
        ));
    }
    Ok(size)
}

/// CRC-64 over everything but the last 8 bytes of a stream whose length is not known while
/// reading: it holds back the 9 most recent bytes (0xFF EOF opcode + CRC).
#[derive(Default)]
pub(super) struct LaggingCrc {
    crc: u64,
    held: Vec<u8>,
    /// The last byte that went into the CRC (the trailer's 0xFF).
    last_crcd: Option<u8>,
    total: u64,
}

impl LaggingCrc {
    fn update(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        self.held.extend_from_slice(chunk);
        if self.held.len() > 8 {
            let n = self.held.len() - 8;
            self.crc = rdb::crc64(self.crc, &self.held[..n]);
            self.last_crcd = Some(self.held[n - 1]);
            self.held.drain(..n);
        }
    }
    fn trailer(&self) -> Vec<u8> {
        let mut t = Vec::with_capacity(9);
        t.extend(self.last_crcd);
        t.extend_from_slice(&self.held);
        t
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Acked {
    pub(super) ack: u64,
}

/// Reads what the replica sends after the payload: `REPLCONF ACK <n>` (every second and on
/// GETACK) and keepalive newlines (while it loads). Every message wakes the waiter, so that a
/// long load does not look like a stall.
pub(super) async fn read_acks(mut rd: FrameReader, tx: watch::Sender<Acked>) {
    while let Ok(Some(msg)) = rd.next().await {
        let Incoming::Frame(f) = msg else {
            tx.send_modify(|_| {});
            continue;
        };
        let Some(argv) = resp::argv(f) else { continue };
        if argv.len() >= 3
            && argv[0].eq_ignore_ascii_case(b"REPLCONF")
            && argv[1].eq_ignore_ascii_case(b"ACK")
        {
            if let Some(n) = std::str::from_utf8(&argv[2])
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            {
                tx.send_modify(|p| p.ack = p.ack.max(n));
            }
        }
    }
}

/// The write side of the replication link, as a [`RecordSink`].
pub(super) struct MasterLink<'a> {
    pub(super) w: BufWriter<OwnedWriteHalf>,
    /// The db the replica has selected, as far as the bytes we sent go.
    pub(super) current_db: Option<u32>,
    /// Bytes sent after the payload: the replica's offset once it has applied them all.
    pub(super) sent: u64,
    pub(super) applied: u64,
    pub(super) skipped: u64,
    /// Inside a record stored in fragments: whether it is skipped, and whether it is a SELECT.
    pub(super) big: Option<(bool, bool)>,
    /// That record was left out by the key filter (not counted as a record without data).
    pub(super) big_filtered: bool,
    pub(super) server: &'a RedisServer,
    /// Key-level restore: which records go out ([`Filter`]).
    pub(super) filter: Option<Box<Filter>>,
    /// The MULTI of the current transaction, held back until one of its commands is kept.
    pub(super) held: Option<Record>,
}

impl MasterLink<'_> {
    pub(super) async fn write(&mut self, bytes: &[u8]) -> Result<(), RestoreError> {
        self.w.write_all(bytes).await.map_err(|e| {
            RestoreError::engine(self.server, format!("sending to the replica: {e}"))
        })?;
        self.sent += bytes.len() as u64;
        Ok(())
    }

    pub(super) async fn select(&mut self, db: u32) -> Result<(), RestoreError> {
        self.write(&resp::encode_command(&["SELECT", &db.to_string()]))
            .await?;
        self.current_db = Some(db);
        Ok(())
    }
}

impl MasterLink<'_> {
    /// What to do before a record's first byte: skip it, or select its db first. Returns
    /// (skipped, is_select).
    async fn begin(&mut self, resp_head: &[u8], db: u32) -> Result<(bool, bool), RestoreError> {
        let name = command_name(resp_head).unwrap_or_default();
        if SKIPPED.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            return Ok((true, false));
        }
        let select = name.eq_ignore_ascii_case(b"SELECT");
        if !select && self.current_db != Some(db) {
            // Each record knows its db. Selecting it when our idea of the replica's db
            // differs makes a later base (whose db at its offset is not recorded) and a
            // resumed stream (which does not repeat SELECT) replay into the right db.
            self.select(db).await?;
        }
        Ok((false, select))
    }

    /// The key filter's verdict on a record (Keep without a filter); sends the held MULTI
    /// first when the verdict says so.
    async fn filtered(
        &mut self,
        verdict: impl FnOnce(&mut Filter) -> Verdict,
    ) -> Result<Verdict, RestoreError> {
        let Some(f) = self.filter.as_mut() else {
            return Ok(Verdict::Keep);
        };
        let v = verdict(f);
        let in_multi = f.in_multi();
        match v {
            Verdict::KeepAfterMulti => {
                if let Some(m) = self.held.take() {
                    self.record_unfiltered(m).await?;
                }
            }
            Verdict::Skip if !in_multi => self.held = None,
            _ => {}
        }
        Ok(v)
    }

    async fn record(&mut self, r: Record) -> Result<(), RestoreError> {
        match self.filtered(|f| f.record(r.db, &r.resp)).await? {
            Verdict::Skip => return Ok(()),
            Verdict::Hold => {
                self.held = Some(r);
                return Ok(());
            }
            Verdict::Keep | Verdict::KeepAfterMulti => {}
        }
        self.record_unfiltered(r).await
    }

    async fn record_unfiltered(&mut self, r: Record) -> Result<(), RestoreError> {
        let (skip, select) = self.begin(&r.resp, r.db).await?;
        if skip {
            self.skipped += 1;
            return Ok(());
        }
        self.write(&r.resp).await?;
        if select {
            self.current_db = Some(r.db);
        }
        self.applied += 1;
        Ok(())
    }

    /// A big record's bytes go out as they come; its name is in the first fragment, and the
    /// db it applies to is the one selected as it starts (a SELECT's own db comes at its end).
    async fn fragment(&mut self, f: Fragment) -> Result<(), RestoreError> {
        let (skip, select) = match self.big {
            Some(state) => state,
            None => {
                let start = f.start_offset;
                self.big_filtered = self.filtered(|k| k.fragmented(start)).await? == Verdict::Skip;
                if self.big_filtered {
                    (true, false)
                } else {
                    self.begin(&f.bytes, f.db).await?
                }
            }
        };
        self.big = Some((skip, select));
        if !skip {
            self.write(&f.bytes).await?;
        }
        if let Some(end) = f.end {
            self.big = None;
            if self.big_filtered {
                self.big_filtered = false;
            } else if skip {
                self.skipped += 1;
            } else {
                if select {
                    self.current_db = Some(end.db);
                }
                self.applied += 1;
            }
        }
        Ok(())
    }
}

impl RecordSink for MasterLink<'_> {
    async fn items(&mut self, items: Vec<Item>) -> Result<(), RestoreError> {
        for it in items {
            match it {
                Item::Record(r) => self.record(r).await?,
                Item::Fragment(f) => self.fragment(f).await?,
            }
        }
        Ok(())
    }
}

/// The command name of a RESP array (`*N\r\n$L\r\n<name>\r\n…`), without parsing the rest.
pub(super) fn command_name(cmd: &[u8]) -> Option<&[u8]> {
    let rest = cmd.strip_prefix(b"*")?;
    let rest = &rest[rest.windows(2).position(|w| w == b"\r\n")? + 2..];
    let rest = rest.strip_prefix(b"$")?;
    let nl = rest.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
    rest.get(nl + 2..nl + 2 + len)
}

/// A new 40-hex replication id. It only needs to differ from any id the server has seen.
pub(super) fn random_replid() -> String {
    let s = std::collections::hash_map::RandomState::new();
    (0..3u64)
        .map(|i| {
            let mut h = s.build_hasher();
            h.write_u64(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            format!("{:016x}", h.finish())
        })
        .collect::<String>()[..40]
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_and_replids() {
        assert_eq!(
            command_name(&resp::encode_command(&["publish", "ch", "m"])),
            Some(&b"publish"[..])
        );
        assert_eq!(command_name(b"*1\r\n$4\r\nPI"), None);
        assert_eq!(command_name(b"+OK\r\n"), None);
        let a = random_replid();
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_replid());
    }
}
