//! One SCAN page of `--to`: each key goes by DUMP/RESTORE when its payload fits, relabelled
//! for an older target when it can be ([`super::relabel`]), else element by element
//! ([`super::elements`]).
//!
//! Sizing before DUMP: `MEMORY USAGE key SAMPLES 0` for every key, then `DEBUG OBJECT`'s
//! `serializedlength` (the payload's size, exactly) for the few whose memory is near the limit.
//! MEMORY USAGE counts what the server holds for the value, which is at least what it
//! serializes (RDB stores the same compact blobs, or less: LZF, integers); SAMPLES 0 makes it
//! count every element rather than guess from five (a hash of small fields and one 300 MB value
//! would be guessed small). It walks the value but copies nothing, like the DUMP that follows.
//! Rejected: DEBUG OBJECT for every key (it serializes each value a second time), and reading
//! the DUMP and checking its length (a 2 GB reply would be held whole to learn it is too big).

use super::elements::{self, Outcome};
use super::relabel::{self, Verdict};
use super::{CopyCounts, RestoreError};
use crate::client::Client;
use crate::redis_server::ServerBinary;
use bytes::Bytes;
use flashback_format::resp::Frame;

/// The biggest DUMP payload flashback holds: a bigger value goes element by element even when
/// the target would take it, so a restore's memory stays near its goal (one reply is read whole,
/// and its buffer may double while it arrives).
pub const DUMP_MAX: u64 = 16 << 20;

/// `proto-max-bulk-len`'s default, assumed when the target refuses CONFIG.
pub const DEFAULT_MAX_BULK: u64 = 512 << 20;

/// What decides a key's route, fixed for the whole copy.
#[derive(Debug, Clone)]
pub struct Route {
    /// Payloads above this many bytes go element by element.
    pub dump_max: u64,
    /// The target's `proto-max-bulk-len` (or its default): also its biggest string.
    pub max_bulk: u64,
    /// The target's server, for its RDB version; None: unknown (payloads are sent as they are).
    pub target: Option<ServerBinary>,
}

impl Route {
    /// From the pre-flight's facts; the note says what was assumed.
    pub fn of(facts: Option<&super::TargetFacts>) -> (Route, Option<String>) {
        let (bulk, note) = match facts.and_then(|f| f.max_bulk) {
            Some(n) => (n, None),
            None => (
                DEFAULT_MAX_BULK,
                Some("the target refused CONFIG GET proto-max-bulk-len: assumed the default, 512 MB, for the biggest RESTORE payload".to_string()),
            ),
        };
        let route = Route {
            // The payload is one argument; the rest of RESTORE's are tiny, but the margin is kept.
            dump_max: DUMP_MAX.min(bulk.saturating_sub(1024)),
            max_bulk: bulk,
            target: facts.and_then(|f| f.binary()),
        };
        (route, note)
    }
}

/// One batch's context: where its keys come from and where the outcome is counted.
pub struct Batch<'a> {
    pub src_db: u32,
    pub replace: bool,
    pub counts: &'a mut CopyCounts,
    pub engine: &'a str,
    pub route: &'a Route,
    /// With `--verify`: the keys left alone, so the proof does not flag them.
    pub skipped: Option<&'a mut super::super::proof::Skipped>,
    /// On a cluster target: keys the node sent elsewhere (`MOVED`/`ASK`, the error's text),
    /// for the caller to retry there; None: such an error is a failure like any other.
    pub redirects: Option<&'a mut Vec<(Bytes, Bytes)>>,
}

impl Batch<'_> {
    fn fail(&mut self, msg: String) {
        self.counts.failed += 1;
        if self.counts.first_failure.is_none() {
            self.counts.first_failure = Some(msg);
        }
    }

    fn skip(&mut self, k: &Bytes) {
        self.counts.skipped += 1;
        if let Some(s) = self.skipped.as_deref_mut() {
            s.insert(self.src_db, k.clone());
        }
    }
}

/// `PEXPIRETIME`'s answer as RESTORE's absolute TTL: None when the key is gone.
fn expiry(f: &Frame) -> Result<Option<i64>, RestoreError> {
    match f {
        Frame::Integer(-2) => Ok(None),
        Frame::Integer(t) => Ok(Some(*t)),
        other => Err(RestoreError::Output(format!(
            "PEXPIRETIME: unexpected reply {}",
            other.text()
        ))),
    }
}

/// `serializedlength:N` from DEBUG OBJECT's line.
fn serialized_length(f: &Frame) -> Option<u64> {
    let (Frame::Simple(t) | Frame::Bulk(t)) = f else {
        return None;
    };
    let t = std::str::from_utf8(t).ok()?;
    let v = t
        .split_whitespace()
        .find_map(|w| w.strip_prefix("serializedlength:"))?;
    v.parse().ok()
}

pub async fn copy_batch(
    src: &mut Client,
    dst: &mut Client,
    keys: &[Bytes],
    batch: &mut Batch<'_>,
) -> Result<(), RestoreError> {
    let dump_max = batch.route.dump_max;
    for k in keys {
        src.send(&[&b"MEMORY"[..], b"USAGE", k, b"SAMPLES", b"0"])
            .await?;
        src.send(&[&b"PEXPIRETIME"[..], &k[..]]).await?;
    }
    // (key, absolute expiry or -1, may be too big for one payload).
    let mut sized = Vec::with_capacity(keys.len());
    for k in keys {
        let usage = src.read().await?;
        let Some(ttl) = expiry(&src.read().await?)? else {
            continue;
        };
        let near = matches!(usage, Frame::Integer(n) if n as u64 > dump_max / 2);
        sized.push((k, ttl, near));
    }
    let mut dump = Vec::with_capacity(sized.len());
    let mut by_elements = Vec::new();
    for (k, ttl, near) in sized {
        if near {
            let f = src.call(&[&b"DEBUG"[..], b"OBJECT", k]).await?;
            // Without an answer (DEBUG refused) the memory figure stands: too big.
            if serialized_length(&f).is_none_or(|n| n + 11 > dump_max) {
                by_elements.push((k, ttl));
                continue;
            }
        }
        dump.push((k, ttl));
    }
    for (k, _) in &dump {
        src.send(&[&b"DUMP"[..], &k[..]]).await?;
    }
    let mut sent = Vec::with_capacity(dump.len());
    for (k, ttl) in dump {
        let payload = match src.read().await? {
            Frame::Bulk(p) => p,
            // Expired or deleted since the SCAN: there is nothing to copy.
            Frame::Null => continue,
            other => {
                return Err(RestoreError::Output(format!(
                    "DUMP {}: unexpected reply {}",
                    crate::show::key(k),
                    crate::show::key(other.text().as_bytes())
                )))
            }
        };
        let verdict = match &batch.route.target {
            Some(t) => relabel::judge(&payload, t),
            None => Verdict::AsIs,
        };
        let payload = match verdict {
            Verdict::AsIs => payload,
            Verdict::Relabel(v) => {
                batch.counts.relabelled += 1;
                Bytes::from(relabel::relabel(&payload, v))
            }
            Verdict::Elements { .. } => {
                by_elements.push((k, ttl));
                continue;
            }
            Verdict::Refuse(why) => {
                let target = batch.route.target.as_ref().map(|t| t.to_string());
                batch.fail(format!(
                    "{}: {why}; the target ({}) cannot take it",
                    crate::show::key(k),
                    target.unwrap_or_default()
                ));
                continue;
            }
        };
        let abs = ttl.max(0).to_string();
        let mut args: Vec<&[u8]> = vec![b"RESTORE", k, abs.as_bytes(), &payload, b"ABSTTL"];
        if batch.replace {
            args.push(b"REPLACE");
        }
        dst.send(&args).await?;
        sent.push(k);
    }
    for k in sent {
        match dst.read().await? {
            Frame::Error(e) if e.starts_with(b"BUSYKEY") => batch.skip(k),
            Frame::Error(e)
                if (e.starts_with(b"MOVED ") || e.starts_with(b"ASK "))
                    && batch.redirects.is_some() =>
            {
                if let Some(r) = batch.redirects.as_deref_mut() {
                    r.push((k.clone(), e));
                }
            }
            Frame::Error(e) => {
                let msg = String::from_utf8_lossy(&e).into_owned();
                let hint = if msg.contains("payload version") {
                    format!(
                        "; the target runs an older server than the restore engine ({}) and refuses its DUMP format: pass --redis-server PATH to a server of the target's version",
                        batch.engine
                    )
                } else {
                    String::new()
                };
                batch.fail(format!("RESTORE {}: {msg}{hint}", crate::show::key(k)));
            }
            _ => batch.counts.written += 1,
        }
    }
    for (k, ttl) in by_elements {
        match elements::copy_key(src, dst, k, ttl, batch.replace, batch.route.max_bulk).await? {
            Outcome::Written => {
                batch.counts.written += 1;
                batch.counts.by_elements += 1;
            }
            Outcome::Skipped => batch.skip(k),
            Outcome::Gone => {}
            Outcome::Failed(msg) => batch.fail(msg),
        }
    }
    Ok(())
}
