//! `verify --against-source URL`: the drill compared with the live source at the same offset.
//!
//! A live primary never stands still, so the source's side is taken under `CLIENT PAUSE …
//! WRITE` (bounded by `--pause`; the server lifts it by itself when the time is up, even if
//! flashback dies): its `master_repl_offset` O, then `DEBUG DIGEST` of the whole dataset when
//! DEBUG is allowed and the dataset is small enough to digest inside the pause, else the value
//! digests of a random sample of keys. The offset is read again before the pause is lifted; if
//! it moved, the pause did not hold and the check says so rather than compare two instants. Then
//! the drill restores exactly offset O (`--at-offset`, exact by construction: no transaction is
//! open while writes are paused) and the same digests are taken on the restored server.
//!
//! Rejected: comparing against a replica of the source (it lags by an unknown amount and may be
//! the very node being captured), and pausing for a full digest whatever the size (DEBUG DIGEST
//! walks every key: seconds of paused writes on a large primary).

use crate::client::{info_field, Client, RedisUrl};
use crate::restore::proof::{debug_digest_works, read_side, Seen};
use bytes::Bytes;
use flashback_format::resp::Frame;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Up to this many keys the whole dataset is digested inside the pause (DEBUG DIGEST runs at
/// millions of small keys per second; this keeps it to a few ms).
const FULL_DIGEST_MAX_KEYS: u64 = 20_000;

/// What `--against-source` asks for.
#[derive(Debug, Clone)]
pub struct AgainstOptions {
    pub url: RedisUrl,
    /// The longest the source's writes may be held back.
    pub pause: Duration,
    /// Keys sampled when the dataset is not digested whole.
    pub sample: usize,
}

/// The source's side, taken under the pause.
#[derive(Debug, Clone)]
pub struct SourceSide {
    pub offset: u64,
    pub paused_ms: u64,
    /// `DEBUG DIGEST` of the whole dataset, when taken.
    pub digest: Option<String>,
    /// Else (db, key, digest and expiry as `restore::proof::read_side` gives them).
    pub sample: Vec<(u32, Bytes, Option<Seen>)>,
    pub use_debug: bool,
    /// `master_replid` and `master_replid2`: which history the source is.
    pub replids: Vec<String>,
}

/// The comparison, in `verify --json` under `drill.against_source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgainstSource {
    /// The source, password masked.
    pub url: String,
    /// The offset both sides were compared at.
    pub offset: u64,
    /// How long the source's writes were held back.
    pub paused_ms: u64,
    /// `debug digest` (whole dataset), `debug digest-value sample` or `client digest sample`.
    pub method: String,
    /// Keys compared (the whole dataset's count for a full digest).
    pub keys: u64,
    pub equal: bool,
    /// What differs, first few.
    pub differences: Vec<String>,
}

/// Takes the source's side, once its replication ids show it is one of `captured` (the replids
/// of the store's generations of source `name`). Errors are one line naming the fix.
pub async fn source_side(
    o: &AgainstOptions,
    name: &str,
    captured: &[String],
) -> Result<SourceSide, String> {
    let url = &o.url;
    let e = |what: &str, err: crate::client::ClientError| {
        format!("--against-source {url}: {what}: {err}")
    };
    let mut c = Client::connect(url, Duration::from_secs(10))
        .await
        .map_err(|err| e("cannot connect", err))?;
    let repl = c.info("replication").await.map_err(|err| e("INFO", err))?;
    if info_field(&repl, "role") != Some("master") {
        return Err(format!(
            "--against-source {url} is a replica: point it at the primary the agent captures (only a primary's writes can be paused at one offset)"
        ));
    }
    let replids: Vec<String> = ["master_replid", "master_replid2"]
        .iter()
        .filter_map(|f| info_field(&repl, f))
        .filter(|id| id.bytes().any(|b| b != b'0'))
        .map(str::to_string)
        .collect();
    if !replids.iter().any(|id| captured.contains(id)) {
        return Err(format!(
            "--against-source {url} is not the source '{name}' this store captured (its replication ids {} match no generation): point it at the captured primary, or pick the source with --name",
            replids.join(", ")
        ));
    }
    let keyspace = c.info("keyspace").await.map_err(|err| e("INFO", err))?;
    let dbs: Vec<(u32, u64)> = keyspace
        .iter()
        .filter_map(|(k, v)| {
            let db = k.strip_prefix("db")?.parse().ok()?;
            let n = v
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))?
                .parse()
                .ok()?;
            Some((db, n))
        })
        .collect();
    let total: u64 = dbs.iter().map(|&(_, n)| n).sum();
    let use_debug = debug_digest_works(&mut c).await;
    let full = use_debug && total <= FULL_DIGEST_MAX_KEYS;
    // Sample keys before the pause (RANDOMKEY, spread over the dbs by size): choosing them is
    // not what needs a still dataset, reading their values is.
    let mut chosen: Vec<(u32, Bytes)> = Vec::new();
    if !full && total > 0 {
        for &(db, n) in &dbs {
            let want = ((o.sample as u64 * n).div_ceil(total)).max(1) as usize;
            c.ok(&["SELECT", &db.to_string()])
                .await
                .map_err(|err| e("SELECT", err))?;
            for _ in 0..want {
                c.send(&["RANDOMKEY"])
                    .await
                    .map_err(|err| e("RANDOMKEY", err))?;
            }
            let mut seen = std::collections::HashSet::new();
            for _ in 0..want {
                if let Frame::Bulk(k) = c.read().await.map_err(|err| e("RANDOMKEY", err))? {
                    if seen.insert(k.clone()) {
                        chosen.push((db, k));
                    }
                }
            }
        }
    }
    let started = Instant::now();
    let pause_ms = o.pause.as_millis().max(1).to_string();
    match c.call(&["CLIENT", "PAUSE", &pause_ms, "WRITE"]).await {
        Ok(Frame::Error(m)) => {
            return Err(format!(
                "--against-source {url}: CLIENT PAUSE refused ({}): the check needs a user allowed to pause writes (+client|pause), or run verify without --against-source",
                String::from_utf8_lossy(&m)
            ))
        }
        Ok(_) => {}
        Err(err) => return Err(e("CLIENT PAUSE", err)),
    }
    let under_pause = async {
        let offset = repl_offset(&mut c).await?;
        let mut digest = None;
        let mut sample = Vec::new();
        if full {
            digest = Some(
                c.ok(&["DEBUG", "DIGEST"])
                    .await
                    .map_err(|e| e.to_string())?
                    .text(),
            );
        } else {
            let mut at = 0;
            while at < chosen.len() {
                let db = chosen[at].0;
                let end = chosen[at..]
                    .iter()
                    .position(|(d, _)| *d != db)
                    .map_or(chosen.len(), |p| at + p);
                c.ok(&["SELECT", &db.to_string()])
                    .await
                    .map_err(|e| e.to_string())?;
                let keys: Vec<Bytes> = chosen[at..end].iter().map(|(_, k)| k.clone()).collect();
                let got = read_side(&mut c, &keys, use_debug)
                    .await
                    .map_err(|e| e.to_string())?;
                sample.extend(keys.into_iter().zip(got).map(|(k, g)| (db, k, g)));
                at = end;
            }
        }
        let again = repl_offset(&mut c).await?;
        Ok::<_, String>((offset, again, digest, sample))
    }
    .await;
    let paused_ms = started.elapsed().as_millis() as u64;
    // Lifted on every path (the pause's own timeout is the backstop).
    let _ = c.call(&["CLIENT", "UNPAUSE"]).await;
    let (offset, again, digest, sample) = under_pause
        .map_err(|err| format!("--against-source {url}: reading under the pause: {err}"))?;
    if again != offset {
        return Err(format!(
            "--against-source {url}: the source's offset moved from {offset} to {again} while it was paused ({paused_ms} ms; the pause was {} ms): raise --pause or lower --sample",
            o.pause.as_millis()
        ));
    }
    Ok(SourceSide {
        offset,
        paused_ms,
        digest,
        sample,
        use_debug,
        replids,
    })
}

async fn repl_offset(c: &mut Client) -> Result<u64, String> {
    let repl = c.info("replication").await.map_err(|e| e.to_string())?;
    info_field(&repl, "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "INFO replication has no master_repl_offset".to_string())
}

/// Takes the same digests on the restored server and compares.
pub async fn compare(
    side: &SourceSide,
    url: &RedisUrl,
    restored: &mut Client,
    restored_digest: &str,
    restored_keys: u64,
) -> Result<AgainstSource, crate::restore::RestoreError> {
    let mut out = AgainstSource {
        url: url.to_string(),
        offset: side.offset,
        paused_ms: side.paused_ms,
        method: String::new(),
        keys: 0,
        equal: true,
        differences: Vec::new(),
    };
    if let Some(d) = &side.digest {
        out.method = "debug digest".into();
        out.keys = restored_keys;
        if d != restored_digest {
            out.equal = false;
            out.differences.push(format!(
                "DEBUG DIGEST of the source at offset {} is {d}, of the restore {restored_digest}",
                side.offset
            ));
        }
        return Ok(out);
    }
    out.method = if side.use_debug {
        "debug digest-value sample"
    } else {
        "client digest sample"
    }
    .into();
    let mut current_db = None;
    for (db, key, want) in &side.sample {
        if current_db != Some(*db) {
            restored.ok(&["SELECT", &db.to_string()]).await?;
            current_db = Some(*db);
        }
        let got = read_side(restored, std::slice::from_ref(key), side.use_debug).await?;
        out.keys += 1;
        let got = got.into_iter().next().flatten();
        if got.as_ref() != want.as_ref() {
            out.equal = false;
            if out.differences.len() < 5 {
                let what = match (want, &got) {
                    (Some(_), None) => "missing in the restore",
                    (None, Some(_)) => "in the restore, not on the source",
                    (Some((a, _)), Some((b, _))) if a == b => "expiry differs",
                    _ => "value differs",
                };
                out.differences
                    .push(format!("db {db} key {}: {what}", crate::show::key(key)));
            }
        }
    }
    Ok(out)
}
