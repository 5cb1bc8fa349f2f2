//! The snapshot that follows +FULLRESYNC: `$<len>` (sized) or `$EOF:<mark>` (diskless),
//! streamed into a sink without ever being held whole, its CRC-64 trailer checked, and its
//! header and AUX fields peeked; then the command stream that follows it.

use super::handshake::ReplicaConn;
use super::stream::ReplicationStream;
use super::{skip_newlines, ReplicaError};
use flashback_format::rdb;
use std::io::Write;

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
    pub(super) fn new(conn: ReplicaConn) -> Self {
        RdbTransfer { conn }
    }

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
