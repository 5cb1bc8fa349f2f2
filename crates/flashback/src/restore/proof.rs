//! Proof after `--to`: compares what the target holds with the restore itself, key by key.
//!
//! The restore server still holds the dataset at T when the copy ends, so the proof is a second
//! pass over it: every key's value digest and expiry on both sides. Keys the copy left alone
//! (they existed on the target; no `--replace`) are not expected to match and are counted
//! apart; keys whose expiry has passed since they were copied are explained, not flagged.
//!
//! Value digests: `DEBUG DIGEST-VALUE` when both servers allow it (encoding-independent and
//! the same on every Redis 7+/Valkey), else a digest computed here from the value read by type
//! (GET, HGETALL, LRANGE, SMEMBERS, ZRANGE WITHSCORES, XRANGE; unordered collections sorted
//! first), on both sides alike. Comparing DUMP payloads was rejected: two servers (or one
//! server after a rehash) may encode the same value differently (listpack vs hashtable), and a
//! target of another version writes another payload version.

use super::preflight::map_db;
use super::RestoreError;
use crate::client::Client;
use crate::progress::{Phase, Progress, Unit};
use bytes::Bytes;
use flashback_format::resp::Frame;
use std::collections::HashSet;

/// Keys per pipelined batch.
pub(super) const BATCH: usize = 200;
/// Differences named in the report; the rest are counted.
const NAMED: usize = 5;

/// What `--verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Proof {
    /// Keys of the restore compared on the target.
    pub compared: u64,
    /// Equal value and expiry.
    pub equal: u64,
    /// Left untouched by the copy (they existed on the target): not expected to match.
    pub skipped: u64,
    /// Gone from the target because their expiry passed after the restore point.
    pub expired_since: u64,
    /// Missing on the target, or with another value or expiry: the copy did not hold.
    pub differ: u64,
    /// The first few differences, one line each.
    pub first_differences: Vec<String>,
    /// How values were compared: `debug digest-value` or `client digest`.
    pub method: String,
}

impl Proof {
    pub fn ok(&self) -> bool {
        self.differ == 0
    }
}

impl std::fmt::Display for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "verify: {} keys compared with the target ({}): {} equal",
            self.compared, self.method, self.equal
        )?;
        if self.skipped > 0 {
            write!(
                f,
                ", {} kept their value on the target (skipped)",
                self.skipped
            )?;
        }
        if self.expired_since > 0 {
            write!(
                f,
                ", {} expired on the target since (their TTL ran out after the restore point)",
                self.expired_since
            )?;
        }
        if self.differ == 0 {
            return writeln!(f, "; the target holds the restore");
        }
        writeln!(f, ", {} DIFFER:", self.differ)?;
        for d in &self.first_differences {
            writeln!(f, "  {d}")?;
        }
        Ok(())
    }
}

/// The keys a copy skipped, by source db, as far as they fit ([`Skipped::CAP`]).
#[derive(Debug, Default)]
pub struct Skipped {
    keys: HashSet<(u32, Bytes)>,
    /// More keys were skipped than the set holds: those not in it cannot be told apart.
    pub overflow: bool,
}

impl Skipped {
    const CAP: usize = 1_000_000;

    pub fn insert(&mut self, db: u32, key: Bytes) {
        if self.keys.len() >= Self::CAP {
            self.overflow = true;
        } else {
            self.keys.insert((db, key));
        }
    }

    fn contains(&self, db: u32, key: &Bytes) -> bool {
        self.keys.contains(&(db, key.clone()))
    }
}

/// Compares every key of the restore server (`src`) with the target (`dst`).
pub async fn prove(
    src: &mut Client,
    dst: &mut Client,
    db_map: &[(u32, u32)],
    skipped: &Skipped,
    progress: &Progress,
) -> Result<Proof, RestoreError> {
    let dbs = super::outputs::dbs_with_keys(src).await?;
    progress.begin(
        Phase::Verify,
        Unit::Keys,
        Some(dbs.iter().map(|&(_, n)| n).sum()),
    );
    let use_debug = debug_digest_works(src).await && debug_digest_works(dst).await;
    let mut proof = Proof {
        method: if use_debug {
            "debug digest-value"
        } else {
            "client digest"
        }
        .into(),
        ..Default::default()
    };
    for &(db, _) in &dbs {
        src.ok(&["SELECT", &db.to_string()]).await?;
        dst.ok(&["SELECT", &map_db(db_map, db).to_string()]).await?;
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let (next, keys) = super::outputs::scan_page(src, &cursor).await?;
            for chunk in keys.chunks(BATCH) {
                compare(src, dst, db, chunk, use_debug, skipped, &mut proof).await?;
                progress.add(chunk.len() as u64);
            }
            if &next[..] == b"0" {
                break;
            }
            cursor = next;
        }
    }
    progress.end();
    Ok(proof)
}

/// Whether `c` answers `DEBUG DIGEST-VALUE` (DEBUG is off by default on Redis 7+ for remote
/// clients, and managed services rename it).
pub async fn debug_digest_works(c: &mut Client) -> bool {
    // On a missing key it answers a digest of zeros; an error means DEBUG is not allowed.
    matches!(
        c.call(&["DEBUG", "DIGEST-VALUE", "flashback:probe:no-such-key"])
            .await,
        Ok(Frame::Array(_))
    )
}

/// One key as one side holds it: (value digest, `PEXPIRETIME`: -1 without a TTL).
pub type Seen = (Vec<u8>, i64);

/// (digest, expiry) of each key on one side; None: no such key. With `use_debug`, the digest
/// is `DEBUG DIGEST-VALUE`'s, else one computed here from the value read by type: compare only
/// digests made the same way.
pub async fn read_side(
    c: &mut Client,
    keys: &[Bytes],
    use_debug: bool,
) -> Result<Vec<Option<Seen>>, RestoreError> {
    for k in keys {
        c.send(&[&b"PEXPIRETIME"[..], k]).await?;
        if use_debug {
            c.send(&[&b"DEBUG"[..], b"DIGEST-VALUE", k]).await?;
        } else {
            c.send(&[&b"TYPE"[..], k]).await?;
        }
    }
    let mut heads = Vec::with_capacity(keys.len());
    for _ in keys {
        let ttl = c.read().await?;
        let second = c.read().await?;
        heads.push((ttl, second));
    }
    let mut out = Vec::with_capacity(keys.len());
    for (k, (ttl, second)) in keys.iter().zip(heads) {
        let ttl = match ttl {
            Frame::Integer(-2) => {
                out.push(None);
                continue;
            }
            Frame::Integer(t) => t,
            other => return Err(unexpected(c, "PEXPIRETIME", &other)),
        };
        let digest = if use_debug {
            match second {
                Frame::Array(mut v) if v.len() == 1 => match v.pop() {
                    Some(Frame::Bulk(d)) | Some(Frame::Simple(d)) => d.to_vec(),
                    _ => return Err(unexpected(c, "DEBUG DIGEST-VALUE", &Frame::Null)),
                },
                other => return Err(unexpected(c, "DEBUG DIGEST-VALUE", &other)),
            }
        } else {
            let kind = match second {
                Frame::Simple(t) => t,
                other => return Err(unexpected(c, "TYPE", &other)),
            };
            if &kind[..] == b"none" {
                out.push(None);
                continue;
            }
            client_digest(c, k, &kind).await?
        };
        out.push(Some((digest, ttl)));
    }
    Ok(out)
}

/// A digest of the value read by type: the type, then its elements in a canonical order.
async fn client_digest(c: &mut Client, key: &Bytes, kind: &[u8]) -> Result<Vec<u8>, RestoreError> {
    let (cmd, sort): (&[&[u8]], bool) = match kind {
        b"string" => (&[b"GET"], false),
        b"hash" => (&[b"HGETALL"], true),
        b"list" => (&[b"LRANGE", b"0", b"-1"], false),
        b"set" => (&[b"SMEMBERS"], true),
        b"zset" => (&[b"ZRANGE", b"0", b"-1", b"WITHSCORES"], false),
        b"stream" => (&[b"XRANGE", b"-", b"+"], false),
        // A module's type: DUMP is the only generic reading, and both sides run the module.
        _ => (&[b"DUMP"], false),
    };
    let mut args: Vec<&[u8]> = vec![cmd[0], key];
    args.extend_from_slice(&cmd[1..]);
    let reply = c.call(&args).await?;
    let mut items: Vec<Vec<u8>> = Vec::new();
    flatten(&reply, sort, &mut items);
    if sort {
        items.sort_unstable();
    }
    let mut crc = flashback_format::rdb::crc64(0, kind);
    for it in &items {
        crc = flashback_format::rdb::crc64(crc, &(it.len() as u64).to_le_bytes());
        crc = flashback_format::rdb::crc64(crc, it);
    }
    Ok(crc.to_le_bytes().to_vec())
}

/// Reply → items: hash field/value pairs kept together when `pairs_sorted` (so sorting keeps
/// each field with its value); nested arrays (stream entries) flattened in order.
fn flatten(f: &Frame, pairs_sorted: bool, out: &mut Vec<Vec<u8>>) {
    match f {
        Frame::Array(v) if pairs_sorted => {
            // Sets sort members; hashes sort field+value pairs (an odd count is a set).
            if v.len() % 2 == 0 && v.iter().all(|x| matches!(x, Frame::Bulk(_))) {
                for pair in v.chunks(2) {
                    let mut joined = Vec::new();
                    for x in pair {
                        if let Frame::Bulk(b) = x {
                            joined.extend_from_slice(&(b.len() as u64).to_le_bytes());
                            joined.extend_from_slice(b);
                        }
                    }
                    out.push(joined);
                }
            } else {
                for x in v {
                    flatten(x, false, out);
                }
            }
        }
        Frame::Array(v) => v.iter().for_each(|x| flatten(x, false, out)),
        Frame::Bulk(b) | Frame::Simple(b) => out.push(b.to_vec()),
        Frame::Integer(n) => out.push(n.to_string().into_bytes()),
        Frame::Null => out.push(Vec::new()),
        Frame::Error(e) => out.push(e.to_vec()),
    }
}

pub(super) async fn compare(
    src: &mut Client,
    dst: &mut Client,
    db: u32,
    keys: &[Bytes],
    use_debug: bool,
    skipped: &Skipped,
    proof: &mut Proof,
) -> Result<(), RestoreError> {
    let want = read_side(src, keys, use_debug).await?;
    let got = read_side(dst, keys, use_debug).await?;
    let now = crate::now_ms() as i64;
    for ((k, w), g) in keys.iter().zip(want).zip(got) {
        // Gone from the restore server since the SCAN (expired meanwhile): nothing to compare.
        let Some((wd, wt)) = w else { continue };
        proof.compared += 1;
        if skipped.contains(db, k) {
            proof.skipped += 1;
            continue;
        }
        let equal = matches!(&g, Some((gd, gt)) if *gd == wd && *gt == wt);
        if !equal && skipped.overflow && g.is_some() {
            // Past the set's capacity a skipped key cannot be told from a failed copy: counted
            // with the skipped ones (the report says the set overflowed).
            proof.skipped += 1;
            continue;
        }
        let what = match g {
            Some((gd, gt)) if gd == wd && gt == wt => {
                proof.equal += 1;
                continue;
            }
            None if wt > 0 && wt <= now => {
                proof.expired_since += 1;
                continue;
            }
            None => "missing on the target".to_string(),
            Some((gd, gt)) if gd == wd => {
                format!(
                    "expiry differs: restore {}, target {}",
                    expiry(wt),
                    expiry(gt)
                )
            }
            Some(_) => "value differs".to_string(),
        };
        proof.differ += 1;
        if proof.first_differences.len() < NAMED {
            proof
                .first_differences
                .push(format!("db {db} key {}: {what}", crate::show::key(k)));
        }
    }
    Ok(())
}

fn expiry(t: i64) -> String {
    match u64::try_from(t) {
        Ok(ms) if t > 0 => crate::timespec::format_ms(ms),
        _ => "none".into(),
    }
}

fn unexpected(c: &Client, what: &str, f: &Frame) -> RestoreError {
    RestoreError::Output(format!(
        "{}: {what} answered {}",
        c.addr,
        crate::show::key(f.text().as_bytes())
    ))
}
