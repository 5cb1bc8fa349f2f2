//! One key written to the `--to` target element by element, in bounded memory: for a value
//! whose DUMP would not fit the target's `proto-max-bulk-len` (or flashback's own memory
//! bound, [`super::copy::DUMP_MAX`]), and for a type the target's RDB version lacks.
//!
//! The value is read from the private restore server in batches of about [`BATCH_BYTES`]
//! (GETRANGE, LRANGE, SSCAN, ZRANGE, HSCAN, XRANGE) and written with APPEND, RPUSH, SADD, ZADD,
//! HSET, XADD under a temporary name; then its expiry is set and it is renamed over the real
//! name (RENAMENX without `--replace`). So the key is never half-visible under its name: a
//! failure midway leaves the old value (or no key) and the temporary one is removed. Writing
//! straight to the real name was rejected for that reason, and for `--replace`, which would
//! have to delete the old value before the new one is complete.
//!
//! The restore server is frozen (nothing writes to it but us), so SSCAN/HSCAN see every element;
//! a duplicate a rehash might return is harmless (SADD/HSET are idempotent).

use super::RestoreError;
use crate::client::{Client, ClientError};
use bytes::Bytes;
use flashback_format::resp::Frame;

/// Bytes of elements per batch read and written: small next to the memory goal, big enough
/// that a round trip carries a lot (a 200 MB value is 200 batches).
const BATCH_BYTES: usize = 1 << 20;
/// Elements per batch, at most (and the first batch's size).
const MAX_COUNT: usize = 1000;

/// How one key's copy ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// The target already had the key (no `--replace`).
    Skipped,
    /// Gone from the restore server (expired) before its copy began.
    Gone,
    /// Refused by the target, or a feature the commands cannot reproduce: one line.
    Failed(String),
}

/// Why a copy stopped before its RENAME.
pub(super) enum Stop {
    /// The target refused a command (its reply), or the value cannot be written this way.
    Refused(String),
    Fatal(RestoreError),
}

impl From<ClientError> for Stop {
    fn from(e: ClientError) -> Self {
        Stop::Fatal(e.into())
    }
}

impl From<RestoreError> for Stop {
    fn from(e: RestoreError) -> Self {
        Stop::Fatal(e)
    }
}

/// The temporary name on the target, in the key's own Cluster slot, so the RENAME over the real
/// name is not refused (CROSSSLOT) on a cluster target: a key with a hash tag keeps it the
/// first one; for a key without, a tag `{N}` is picked whose slot is the key's (some N below a
/// few hundred thousand always is). Rejected: `{key}` as the tag, which cannot express a key
/// that itself holds `{` or `}`.
pub fn temp_key(key: &[u8]) -> Vec<u8> {
    let mut t = format!("flashback:tmp:{}:", std::process::id()).into_bytes();
    if super::slots::hash_tag(key).is_none() {
        let slot = super::slots::key_slot(key);
        if let Some(n) =
            (0u32..1 << 22).find(|n| super::slots::key_slot(n.to_string().as_bytes()) == slot)
        {
            t.extend_from_slice(format!("{{{n}}}:").as_bytes());
        }
    }
    t.extend_from_slice(key);
    t
}

/// Copies `key` (its absolute expiry `pexpiretime`: -1 none) from `src` to `dst`.
pub async fn copy_key(
    src: &mut Client,
    dst: &mut Client,
    key: &Bytes,
    pexpiretime: i64,
    replace: bool,
    max_bulk: u64,
) -> Result<Outcome, RestoreError> {
    if !replace && int(&dst.call(&[&b"EXISTS"[..], key]).await?) == Some(1) {
        return Ok(Outcome::Skipped);
    }
    let kind = match src.call(&[&b"TYPE"[..], key]).await? {
        Frame::Simple(t) | Frame::Bulk(t) => t,
        other => return Err(unexpected(src, "TYPE", &other)),
    };
    if &kind[..] == b"none" {
        return Ok(Outcome::Gone);
    }
    let tmp = Bytes::from(temp_key(key));
    dst.ok(&[&b"UNLINK"[..], &tmp]).await?;
    let mut w = Writer { src, dst, key, tmp };
    let written = match &kind[..] {
        b"string" => w.string(max_bulk).await,
        b"list" => w.list().await,
        b"set" => w.set().await,
        b"zset" => w.zset().await,
        b"hash" => w.hash().await,
        b"stream" => super::elements_stream::stream(&mut w).await,
        other => Err(Stop::Refused(format!(
            "a value of module type {} cannot be written element by element",
            crate::show::key(other)
        ))),
    };
    let written = match written {
        Ok(()) => w.finish(pexpiretime, replace).await,
        Err(e) => Err(e),
    };
    let Writer { dst, tmp, .. } = w;
    match written {
        Ok(o) => Ok(o),
        Err(stop) => {
            // Best effort: on a dead connection the temporary key stays (its name says whose).
            let _ = dst.call(&[&b"UNLINK"[..], &tmp]).await;
            match stop {
                Stop::Refused(why) => Ok(Outcome::Failed(format!(
                    "{} ({}, written element by element): {why}",
                    crate::show::key(key),
                    String::from_utf8_lossy(&kind)
                ))),
                Stop::Fatal(e) => Err(e),
            }
        }
    }
}

/// The two ends of one key's copy.
pub(super) struct Writer<'a> {
    pub src: &'a mut Client,
    pub dst: &'a mut Client,
    pub key: &'a Bytes,
    pub tmp: Bytes,
}

impl Writer<'_> {
    /// Reads from the restore server; an error reply is unexpected there (it is ours).
    pub async fn read(&mut self, args: &[&[u8]]) -> Result<Frame, Stop> {
        match self.src.call(args).await? {
            Frame::Error(e) => Err(Stop::Fatal(RestoreError::Output(format!(
                "{}: {} {}: {}",
                self.src.addr,
                String::from_utf8_lossy(args[0]),
                crate::show::key(self.key),
                String::from_utf8_lossy(&e)
            )))),
            f => Ok(f),
        }
    }

    /// Writes to the target; its error reply stops this key's copy.
    pub async fn write<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame, Stop> {
        match self.dst.call(args).await? {
            Frame::Error(e) => Err(Stop::Refused(format!(
                "the target refused {}: {}",
                String::from_utf8_lossy(args[0].as_ref()),
                String::from_utf8_lossy(&e)
            ))),
            f => Ok(f),
        }
    }

    /// A command for the target: `cmd tmp` then `rest`.
    pub fn cmd(&self, cmd: &'static [u8]) -> Vec<Bytes> {
        vec![Bytes::from_static(cmd), self.tmp.clone()]
    }

    /// Refused before any write when longer than the target's `proto-max-bulk-len`: APPEND and
    /// SETRANGE check the same limit, so no string that long can exist there.
    async fn string(&mut self, max_bulk: u64) -> Result<(), Stop> {
        let len = int(&self.read(&[b"STRLEN", self.key]).await?).unwrap_or(0);
        if u64::try_from(len).unwrap_or(0) > max_bulk {
            return Err(Stop::Refused(format!(
                "{len} bytes, more than the target's proto-max-bulk-len ({max_bulk}), which is also its biggest string: raise it on the target (CONFIG SET proto-max-bulk-len {len})"
            )));
        }
        let mut at = 0i64;
        let mut first = true;
        while first || at < len {
            let end = (at + BATCH_BYTES as i64 - 1).to_string();
            let part = match self
                .read(&[
                    b"GETRANGE",
                    self.key,
                    at.to_string().as_bytes(),
                    end.as_bytes(),
                ])
                .await?
            {
                Frame::Bulk(b) => b,
                _ => Bytes::new(),
            };
            // SET first, so an empty string is a key too; APPEND after.
            let mut args = self.cmd(if first { b"SET" } else { b"APPEND" });
            args.push(part);
            self.write(&args).await?;
            at += BATCH_BYTES as i64;
            first = false;
        }
        Ok(())
    }

    async fn list(&mut self) -> Result<(), Stop> {
        let len = int(&self.read(&[b"LLEN", self.key]).await?).unwrap_or(0);
        let (mut at, mut pace) = (0i64, Pace::default());
        while at < len {
            let end = (at + pace.count as i64 - 1).to_string();
            let items = bulks(
                self.read(&[
                    b"LRANGE",
                    self.key,
                    at.to_string().as_bytes(),
                    end.as_bytes(),
                ])
                .await?,
            );
            if items.is_empty() {
                break;
            }
            at += items.len() as i64;
            pace.saw(&items);
            let mut args = self.cmd(b"RPUSH");
            args.extend(items);
            self.write(&args).await?;
        }
        Ok(())
    }

    async fn set(&mut self) -> Result<(), Stop> {
        let mut cursor = Bytes::from_static(b"0");
        let mut pace = Pace::default();
        loop {
            let (next, items) = self.scan_page(b"SSCAN", &cursor, &pace).await?;
            pace.saw(&items);
            if !items.is_empty() {
                let mut args = self.cmd(b"SADD");
                args.extend(items);
                self.write(&args).await?;
            }
            if &next[..] == b"0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn hash(&mut self) -> Result<(), Stop> {
        // Field TTLs (Redis 7.4+, Valkey 9): read per batch when the restore server has them.
        let field_ttl = !matches!(
            self.src
                .call(&[&b"HPEXPIRETIME"[..], self.key, b"FIELDS", b"1", b"_"])
                .await?,
            Frame::Error(_)
        );
        let mut cursor = Bytes::from_static(b"0");
        let mut pace = Pace::default();
        loop {
            let (next, items) = self.scan_page(b"HSCAN", &cursor, &pace).await?;
            pace.saw(&items);
            if !items.is_empty() {
                let fields: Vec<Bytes> = items.iter().step_by(2).cloned().collect();
                let mut args = self.cmd(b"HSET");
                args.extend(items);
                self.write(&args).await?;
                if field_ttl {
                    self.field_ttls(&fields).await?;
                }
            }
            if &next[..] == b"0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Each field of `fields` with a TTL on the restore server gets it on the target.
    async fn field_ttls(&mut self, fields: &[Bytes]) -> Result<(), Stop> {
        let n = fields.len().to_string();
        let mut args: Vec<&[u8]> = vec![b"HPEXPIRETIME", self.key, b"FIELDS", n.as_bytes()];
        args.extend(fields.iter().map(|f| &f[..]));
        let Frame::Array(ts) = self.read(&args).await? else {
            return Ok(());
        };
        for (f, t) in fields.iter().zip(ts) {
            if let Some(t) = int(&t).filter(|&t| t > 0) {
                let mut a = self.cmd(b"HPEXPIREAT");
                a.extend([
                    Bytes::from(t.to_string()),
                    Bytes::from_static(b"FIELDS"),
                    Bytes::from_static(b"1"),
                    f.clone(),
                ]);
                self.write(&a).await?;
            }
        }
        Ok(())
    }

    async fn zset(&mut self) -> Result<(), Stop> {
        let len = int(&self.read(&[b"ZCARD", self.key]).await?).unwrap_or(0);
        let (mut at, mut pace) = (0i64, Pace::default());
        while at < len {
            let end = (at + pace.count as i64 - 1).to_string();
            let items = bulks(
                self.read(&[
                    b"ZRANGE",
                    self.key,
                    at.to_string().as_bytes(),
                    end.as_bytes(),
                    b"WITHSCORES",
                ])
                .await?,
            );
            if items.len() < 2 {
                break;
            }
            at += (items.len() / 2) as i64;
            pace.saw(&items);
            // ZRANGE answers member, score; ZADD takes score, member. Scores come as the
            // server's 17-digit text (or inf), which ZADD parses back to the same double.
            let mut args = self.cmd(b"ZADD");
            for pair in items.chunks(2) {
                args.push(pair[1].clone());
                args.push(pair[0].clone());
            }
            self.write(&args).await?;
        }
        Ok(())
    }

    async fn scan_page(
        &mut self,
        cmd: &[u8],
        cursor: &Bytes,
        pace: &Pace,
    ) -> Result<(Bytes, Vec<Bytes>), Stop> {
        let count = pace.count.to_string();
        let reply = self
            .read(&[cmd, self.key, cursor, b"COUNT", count.as_bytes()])
            .await?;
        match reply {
            Frame::Array(mut v) if v.len() == 2 => {
                let items = bulks(v.pop().unwrap_or(Frame::Null));
                match v.pop() {
                    Some(Frame::Bulk(next)) => Ok((next, items)),
                    _ => Err(Stop::Fatal(unexpected(self.src, "SCAN", &Frame::Null))),
                }
            }
            other => Err(Stop::Fatal(unexpected(self.src, "SCAN", &other))),
        }
    }

    /// Expiry, then the rename into place.
    async fn finish(&mut self, pexpiretime: i64, replace: bool) -> Result<Outcome, Stop> {
        if pexpiretime > 0 {
            let mut a = self.cmd(b"PEXPIREAT");
            a.push(Bytes::from(pexpiretime.to_string()));
            if int(&self.write(&a).await?) == Some(0) {
                return Ok(Outcome::Gone);
            }
        }
        let cmd: &'static [u8] = if replace { b"RENAME" } else { b"RENAMENX" };
        let mut a = self.cmd(cmd);
        a.push(self.key.clone());
        match self.dst.call(&a).await? {
            // Its expiry passed between PEXPIREAT and RENAME: gone, like any expired key.
            Frame::Error(e) if e.starts_with(b"ERR no such key") => Ok(Outcome::Gone),
            Frame::Error(e) => Err(Stop::Refused(format!(
                "the target refused {}: {}",
                String::from_utf8_lossy(cmd),
                String::from_utf8_lossy(&e)
            ))),
            // RENAMENX: someone created the key meanwhile; theirs stays.
            Frame::Integer(0) => {
                self.dst.call(&[&b"UNLINK"[..], &self.tmp]).await?;
                Ok(Outcome::Skipped)
            }
            _ => Ok(Outcome::Written),
        }
    }
}

/// Batch sizes that keep a batch near [`BATCH_BYTES`] whatever the elements weigh.
pub(super) struct Pace {
    pub count: usize,
}

impl Default for Pace {
    fn default() -> Self {
        Pace { count: 100 }
    }
}

impl Pace {
    pub fn saw(&mut self, items: &[Bytes]) {
        let bytes: usize = items.iter().map(|i| i.len() + 16).sum();
        if bytes > BATCH_BYTES {
            self.count = (self.count / 2).max(1);
        } else if bytes < BATCH_BYTES / 4 && items.len() >= self.count {
            self.count = (self.count * 2).min(MAX_COUNT);
        }
    }
}

pub(super) fn int(f: &Frame) -> Option<i64> {
    match f {
        Frame::Integer(n) => Some(*n),
        _ => None,
    }
}

/// The bulk strings of an array reply, in order (nested arrays flattened).
pub(super) fn bulks(f: Frame) -> Vec<Bytes> {
    let mut out = Vec::new();
    fn walk(f: Frame, out: &mut Vec<Bytes>) {
        match f {
            Frame::Array(v) => v.into_iter().for_each(|x| walk(x, out)),
            Frame::Bulk(b) | Frame::Simple(b) => out.push(b),
            Frame::Integer(n) => out.push(Bytes::from(n.to_string())),
            _ => {}
        }
    }
    walk(f, &mut out);
    out
}

pub(super) fn unexpected(c: &Client, what: &str, f: &Frame) -> RestoreError {
    RestoreError::Output(format!(
        "{}: {what} answered {}",
        c.addr,
        crate::show::key(f.text().as_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::super::slots::key_slot;
    use super::temp_key;

    #[test]
    fn temp_names_keep_the_key_slot() {
        for k in [
            &b"plain"[..],
            b"{tag}x",
            b"a{}b",
            b"a{b",
            b"}{",
            b"",
            b"\xff\x00",
        ] {
            let t = temp_key(k);
            assert_eq!(key_slot(&t), key_slot(k), "{k:?}");
            assert!(t.starts_with(b"flashback:tmp:") && t.ends_with(k));
        }
    }
}
