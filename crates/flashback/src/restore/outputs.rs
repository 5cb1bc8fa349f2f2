//! Where a restored dataset goes once the engine has built it in its private server:
//! an RDB file (`--rdb`), a live instance (`--to`), or the server itself (`--serve`). Also the
//! post-processing every sink shares: `--keys` (drop the keys that do not match) and
//! `--ttl persist`.
//!
//! `--to` copies with DUMP/RESTORE rather than by pointing the target at a master: the target
//! keeps its other keys, and existing keys are left alone unless `--replace` (DESIGN.md).
//!
//! Size: ~750 lines of code, over the house's ~600, since `--rdb` learnt to SAVE beside its
//! output and `--to` learnt cluster targets. The seam is the `--rdb` sink (`to_rdb`, `rename_into_place`,
//! `save_beside`, `place_file`, `rdb_server_args`), which would move to `outputs/rdb.rs` as
//! `copy`, `cluster` and `serve_cluster` already did; not moved in the session that grew it,
//! for lack of time to re-run its tests after the move.

mod cluster;
mod copy;
mod elements;
mod elements_stream;
mod relabel;
mod serve_cluster;
pub mod slots;

use super::preflight::{check_target_dbs, map_db, resolve_rdb, temp_name, RdbOut, TargetFacts};
use super::RestoreError;
use crate::client::{Client, RedisUrl};
use crate::progress::{Phase, Progress, Unit};
use crate::redis_server::RedisServer;
use bytes::Bytes;
pub use cluster::{to_cluster, Cluster};
pub use copy::{DEFAULT_MAX_BULK, DUMP_MAX};
use flashback_format::resp::Frame;
pub use serve_cluster::{serve_cluster, ClusterSpec, ServedNode};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Keys per SCAN page and per pipelined batch.
const BATCH: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCounts {
    pub target: String,
    pub written: u64,
    /// Already present on the target (BUSYKEY) and left untouched.
    pub skipped: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
    /// Of `written`: keys too big for one RESTORE (or of a type the target's RDB version
    /// lacks), written element by element.
    pub by_elements: u64,
    /// Of `written`: DUMP payloads relabelled to the target's older RDB version.
    pub relabelled: u64,
    /// What the copy had to assume (a refused CONFIG), one line each.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Delivered {
    Rdb {
        path: PathBuf,
        bytes: u64,
    },
    /// The copy's counts, and the proof when `--verify` ran.
    To(CopyCounts, Option<super::proof::Proof>),
    Serve {
        port: u16,
        pid: Option<u32>,
        dir: PathBuf,
        log: PathBuf,
        /// Served over TLS only (`--serve` with `--tls-cert/--tls-key`).
        tls: bool,
    },
    /// `--serve-cluster`: the nodes handed over, and the copy into them.
    ServeCluster {
        spec: ClusterSpec,
        nodes: Vec<ServedNode>,
        counts: CopyCounts,
        proof: Option<super::proof::Proof>,
    },
}

impl Delivered {
    /// Keys that failed to copy, or a proof that failed: the delivery finished, but the
    /// target may differ from the restored state.
    pub fn has_failures(&self) -> bool {
        match self {
            Delivered::To(c, proof) => c.failed > 0 || proof.as_ref().is_some_and(|p| !p.ok()),
            Delivered::ServeCluster { counts, proof, .. } => {
                counts.failed > 0 || proof.as_ref().is_some_and(|p| !p.ok())
            }
            Delivered::Rdb { .. } | Delivered::Serve { .. } => false,
        }
    }
}

impl std::fmt::Display for Delivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Delivered::Rdb { path, bytes } => {
                writeln!(f, "wrote {} ({bytes} bytes)", path.display())
            }
            Delivered::To(c, proof) => show_copy(f, c, proof.as_ref()),
            Delivered::ServeCluster {
                spec,
                nodes,
                counts,
                proof,
            } => {
                show_copy(f, counts, proof.as_ref())?;
                show_cluster(f, spec, nodes)
            }
            Delivered::Serve {
                port,
                pid,
                dir,
                log,
                tls,
            } => {
                let pid = pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
                let (url, cli) = match tls {
                    true => (
                        format!("rediss://127.0.0.1:{port}"),
                        format!("redis-cli --tls --cacert CA.crt -p {port}"),
                    ),
                    false => (
                        format!("redis://127.0.0.1:{port}"),
                        format!("redis-cli -p {port}"),
                    ),
                };
                writeln!(f, "serving the restored dataset at {url} (pid {pid})")?;
                writeln!(f, "  connect: {cli}")?;
                writeln!(f, "  stop:    {cli} shutdown nosave   (or: kill {pid})")?;
                writeln!(
                    f,
                    "  data dir: {} (log: {}); remove it after stopping the server",
                    dir.display(),
                    log.display()
                )
            }
        }
    }
}

/// `--to`'s counts and proof (also the copy into a `--serve-cluster`).
fn show_copy(
    f: &mut std::fmt::Formatter<'_>,
    c: &CopyCounts,
    proof: Option<&super::proof::Proof>,
) -> std::fmt::Result {
    writeln!(
        f,
        "{}: {} keys written, {} skipped, {} failed",
        c.target, c.written, c.skipped, c.failed
    )?;
    if c.by_elements > 0 || c.relabelled > 0 {
        writeln!(
                        f,
                        "  {} written element by element (too big for one RESTORE, or of a type the target's RDB version lacks), {} DUMP payloads relabelled to the target's RDB version",
                        c.by_elements, c.relabelled
                    )?;
    }
    for n in &c.notes {
        writeln!(f, "  note: {n}")?;
    }
    if c.skipped > 0 {
        writeln!(
            f,
            "  skipped keys already existed on the target; pass --replace to overwrite them"
        )?;
    }
    if let Some(m) = &c.first_failure {
        writeln!(f, "  first failure: {m}")?;
    }
    match proof {
        Some(p) => write!(f, "{p}"),
        None => writeln!(
            f,
            "verify: not run (--no-verify, or {} keys or more without --verify)",
            VERIFY_AUTO_MAX_KEYS
        ),
    }
}

/// How to reach and stop a `--serve-cluster`'s nodes.
fn show_cluster(
    f: &mut std::fmt::Formatter<'_>,
    spec: &ClusterSpec,
    nodes: &[ServedNode],
) -> std::fmt::Result {
    writeln!(
        f,
        "serving the restored dataset as a Redis Cluster of {} primaries ({} replicas each) at redis://127.0.0.1:{}",
        spec.primaries, spec.replicas, spec.port
    )?;
    writeln!(f, "  connect: redis-cli -c -p {}", spec.port)?;
    for n in nodes {
        let pid = n.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
        let role = match (n.replica_of, n.slots) {
            (Some(p), _) => format!("replica of 127.0.0.1:{p}"),
            (None, Some((lo, hi))) => format!("primary, slots {lo}-{hi}"),
            (None, None) => "primary".into(),
        };
        writeln!(
            f,
            "  node 127.0.0.1:{} {role} (pid {pid}, dir {})",
            n.port,
            n.dir.display()
        )?;
    }
    let pids: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.pid)
        .map(|p| p.to_string())
        .collect();
    writeln!(
        f,
        "  stop:    kill {}   (or: redis-cli -p PORT shutdown nosave, for each node)",
        pids.join(" ")
    )?;
    writeln!(
        f,
        "  data dirs: each node's dir above holds its nodes.conf and log; remove them after stopping the servers"
    )
}

/// Redis glob matching (`*`, `?`, `[abc]`, `[^a-z]`, `\x`) over bytes, as `KEYS`/`SCAN MATCH`.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // Backtracking point of the last `*`: (pattern index after it, string index it matched to).
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, i));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match_class(pattern, p, s[i]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == s[i]).then_some(p + 2),
            Some(&c) => (c == s[i]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(np), _) => {
                p = np;
                i += 1;
            }
            (None, Some((sp, si))) => {
                p = sp;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[p] == b'['`; returns the index after it.
fn match_class(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    let mut j = p + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut hit = false;
    while j < pattern.len() && pattern[j] != b']' {
        if pattern[j] == b'\\' && j + 1 < pattern.len() {
            hit |= pattern[j + 1] == c;
            j += 2;
        } else if j + 2 < pattern.len() && pattern[j + 1] == b'-' && pattern[j + 2] != b']' {
            let (lo, hi) = if pattern[j] <= pattern[j + 2] {
                (pattern[j], pattern[j + 2])
            } else {
                (pattern[j + 2], pattern[j])
            };
            hit |= lo <= c && c <= hi;
            j += 3;
        } else {
            hit |= pattern[j] == c;
            j += 1;
        }
    }
    // An unterminated class matches like Redis does: up to the end of the pattern.
    (hit != negate).then_some((j + 1).min(pattern.len()))
}

/// The dbs that hold keys and how many, from `INFO keyspace` (`db3:keys=12,expires=0,…`).
pub(super) async fn dbs_with_keys(c: &mut Client) -> Result<Vec<(u32, u64)>, RestoreError> {
    let info = c.info("keyspace").await?;
    let mut dbs: Vec<(u32, u64)> = info
        .iter()
        .filter_map(|(k, v)| {
            let db = k.strip_prefix("db")?.parse().ok()?;
            let keys = v
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Some((db, keys))
        })
        .collect();
    dbs.sort_unstable();
    Ok(dbs)
}

/// One SCAN page: (next cursor, keys).
pub(super) async fn scan_page(
    c: &mut Client,
    cursor: &[u8],
) -> Result<(Bytes, Vec<Bytes>), RestoreError> {
    let addr = c.addr.clone();
    let bad = || RestoreError::Output(format!("{addr}: SCAN returned an unexpected reply"));
    let count = BATCH.to_string();
    let f = c
        .ok(&[&b"SCAN"[..], cursor, b"COUNT", count.as_bytes()])
        .await?;
    let Frame::Array(mut parts) = f else {
        return Err(bad());
    };
    if parts.len() != 2 {
        return Err(bad());
    }
    let keys = match parts.pop() {
        Some(Frame::Array(ks)) => ks
            .into_iter()
            .filter_map(|k| {
                if let Frame::Bulk(b) = k {
                    Some(b)
                } else {
                    None
                }
            })
            .collect(),
        _ => return Err(bad()),
    };
    let Some(Frame::Bulk(next)) = parts.pop() else {
        return Err(bad());
    };
    Ok((next, keys))
}

/// Every key of every db, a SCAN page at a time, in a pull style so that callers can use
/// their own state between pages. Leaves `c` on the db of the page it returned.
struct KeyScan {
    /// (db, key count when the scan began).
    dbs: Vec<(u32, u64)>,
    /// Index into `dbs` of the db being scanned, and its cursor (None: not started).
    at: usize,
    cursor: Option<Bytes>,
}

impl KeyScan {
    async fn new(c: &mut Client) -> Result<KeyScan, RestoreError> {
        Ok(KeyScan {
            dbs: dbs_with_keys(c).await?,
            at: 0,
            cursor: None,
        })
    }

    /// The next non-empty page as (db, keys), or None when every db is done.
    async fn next_page(
        &mut self,
        c: &mut Client,
    ) -> Result<Option<(u32, Vec<Bytes>)>, RestoreError> {
        while let Some(&(db, _)) = self.dbs.get(self.at) {
            let cursor = match self.cursor.take() {
                Some(cur) => cur,
                None => {
                    c.ok(&["SELECT", &db.to_string()]).await?;
                    Bytes::from_static(b"0")
                }
            };
            let (next, keys) = scan_page(c, &cursor).await?;
            if &next[..] == b"0" {
                self.at += 1;
            } else {
                self.cursor = Some(next);
            }
            if !keys.is_empty() {
                return Ok(Some((db, keys)));
            }
        }
        Ok(None)
    }
}

/// Sends one command per key, pipelined, and returns the replies in order.
async fn pipeline(c: &mut Client, cmd: &[u8], keys: &[Bytes]) -> Result<Vec<Frame>, RestoreError> {
    for k in keys {
        c.send(&[cmd, &k[..]]).await?;
    }
    let mut out = Vec::with_capacity(keys.len());
    for _ in keys {
        out.push(c.read().await?);
    }
    Ok(out)
}

/// `--keys`/`--db`: deletes every key the selection does not hold (after a key-level replay,
/// the closure keys nobody asked for). Returns (kept, deleted).
///
/// Deleting on the private server, rather than filtering in each sink, keeps one definition of
/// "the restored keys" for `--rdb`, `--to` and `--serve`.
pub async fn keep_only(
    server: &RedisServer,
    sel: &super::keys::Selection,
) -> Result<(u64, u64), RestoreError> {
    let mut c = server.client().await?;
    let (mut kept, mut deleted) = (0u64, 0u64);
    let mut scan = KeyScan::new(&mut c).await?;
    while let Some((db, keys)) = scan.next_page(&mut c).await? {
        let in_db = sel.db.is_none_or(|d| d == db);
        let (keep, drop): (Vec<Bytes>, Vec<Bytes>) =
            keys.into_iter().partition(|k| in_db && sel.matches_name(k));
        kept += keep.len() as u64;
        deleted += drop.len() as u64;
        for r in pipeline(&mut c, b"UNLINK", &drop).await? {
            if let Frame::Error(e) = r {
                return Err(RestoreError::Output(format!(
                    "--keys: UNLINK failed: {}",
                    crate::show::key(&e)
                )));
            }
        }
    }
    Ok((kept, deleted))
}

/// `--rdb FILE`: SAVE on the restore server, then put its dump where [`resolve_rdb`] says:
/// a regular file through a temp file next to it and a rename (FILE is the old file or the
/// complete new one, never half, and a symlink keeps pointing at it), a device or FIFO written
/// through in place.
///
/// For a regular file the server saves straight into FILE's directory under the temp name
/// ([`save_beside`]), so the rename is the whole move: copying a dump of hundreds of MB out of
/// the server's directory cost as much again as a bare load's read of it (issue 12). A device
/// or FIFO cannot be renamed over; it, a server that refuses `CONFIG SET dir` (one started
/// without `enable-protected-configs`) and a SAVE there that fails fall back to a SAVE in the
/// server's own directory and a copy.
pub async fn to_rdb(
    server: &RedisServer,
    path: &Path,
    force: bool,
    progress: &Progress,
) -> Result<Delivered, RestoreError> {
    progress.begin(Phase::Copy, Unit::Bytes, None);
    let mut c = server.client().await?;
    if let RdbOut::File { file, dir } = resolve_rdb(path, force)? {
        if let Some(d) = save_beside(&mut c, server, path, &file, &dir, force).await? {
            return Ok(d);
        }
    }
    c.ok(&["SAVE"]).await?;
    let dump = server.dir.join("dump.rdb");
    place_file(&dump, path, force).await
}

/// The `CONFIG SET` arguments a `--rdb` restore server is started with so that [`save_beside`]
/// may point its `dir` at the output's directory (a protected config since Redis 7.0; `local`:
/// from 127.0.0.1 only, and the server is never handed to anyone). Older servers lack the
/// option and would refuse to start with it, so they get nothing and the copy.
pub fn rdb_server_args(binary: &crate::redis_server::ServerBinary) -> Vec<String> {
    match binary.version >= (7, 0, 0) {
        true => vec!["--enable-protected-configs".into(), "local".into()],
        false => Vec::new(),
    }
}

/// SAVEs the restore server's dataset as the temp file next to `file` and renames it over
/// `file`. None: the server refused to save there, or its SAVE there failed (nothing left
/// behind); the caller copies.
///
/// Redis writes `temp-<pid>.rdb` in `dir`, fsyncs it and renames it to `dbfilename`; a failed
/// SAVE removes its temp file. The fsync here again is not redundant for every server: it is
/// what makes the file durable whatever the server did, and costs nothing on a clean file.
async fn save_beside(
    c: &mut Client,
    server: &RedisServer,
    shown: &Path,
    file: &Path,
    dir: &Path,
    force: bool,
) -> Result<Option<Delivered>, RestoreError> {
    use std::os::unix::ffi::OsStrExt;
    let io = |source| RestoreError::Io {
        path: shown.to_path_buf(),
        source,
    };
    let tmp = TempFile(Some(temp_name(file, "rdb")));
    let (Some(name), Ok(abs_dir)) = (tmp.path().file_name(), std::fs::canonicalize(dir)) else {
        return Ok(None);
    };
    let set = [
        &b"CONFIG"[..],
        b"SET",
        b"dir",
        abs_dir.as_os_str().as_bytes(),
        b"dbfilename",
        name.as_bytes(),
    ];
    if let Frame::Error(e) = c.call(&set).await? {
        tracing::debug!(
            "the restore server will not save in {}: {}; copying its dump there",
            abs_dir.display(),
            String::from_utf8_lossy(&e)
        );
        return Ok(None);
    }
    // Abandoned mid-SAVE (SIGINT drops this future, then the server is killed), the server's
    // own temp file would stay in the user's directory: removed with ours unless SAVE returned.
    let server_tmp = TempFile(server.pid().map(|p| abs_dir.join(format!("temp-{p}.rdb"))));
    let saved = c.ok(&["SAVE"]).await;
    server_tmp.keep();
    // Back to its own directory whatever SAVE did: nothing else of it lands beside the output.
    let back = [
        &b"CONFIG"[..],
        b"SET",
        b"dir",
        server.dir.as_os_str().as_bytes(),
        b"dbfilename",
        b"dump.rdb",
    ];
    let _ = c.call(&back).await;
    match saved {
        // A refused SAVE (a full disk there) says only "ERR"; the copy that follows meets the
        // same disk and reports it as one line naming the cause ("No space left on device").
        Err(crate::client::ClientError::Server { msg, .. }) => {
            tracing::debug!(
                "SAVE in {} failed: {msg}; copying instead",
                abs_dir.display()
            );
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    let f = tokio::fs::File::open(tmp.path()).await.map_err(io)?;
    f.sync_all().await.map_err(io)?;
    let bytes = f.metadata().await.map_err(io)?.len();
    drop(f);
    rename_into_place(tmp, shown, file, dir, force).await?;
    Ok(Some(Delivered::Rdb {
        path: shown.to_path_buf(),
        bytes,
    }))
}

/// Moves the RDB file `dump` where [`resolve_rdb`] says `path` goes (see [`to_rdb`]).
pub(super) async fn place_file(
    dump: &Path,
    path: &Path,
    force: bool,
) -> Result<Delivered, RestoreError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| RestoreError::Io { path: p, source }
    };
    // Resolved again, not taken from the pre-flight: the file may have appeared (or a link
    // changed) while the restore ran.
    let bytes = match resolve_rdb(path, force)? {
        RdbOut::WriteThrough(dev) => {
            let mut src = tokio::fs::File::open(dump).await.map_err(io(dump))?;
            let mut dst = tokio::fs::OpenOptions::new()
                .write(true)
                .open(&dev)
                .await
                .map_err(io(path))?;
            let n = tokio::io::copy(&mut src, &mut dst)
                .await
                .map_err(io(path))?;
            dst.flush().await.map_err(io(path))?;
            // fsync means nothing to /dev/null or a pipe (EINVAL); a real device reports its
            // write errors through it, so only "not supported" is let pass.
            match dst.sync_all().await {
                Err(e) if e.raw_os_error() != Some(libc::EINVAL) => return Err(io(path)(e)),
                _ => {}
            }
            n
        }
        RdbOut::File { file, dir } => {
            let tmp = TempFile(Some(temp_name(&file, "tmp")));
            let tmp_path = tmp.path().to_path_buf();
            let bytes = tokio::fs::copy(dump, &tmp_path).await.map_err(io(path))?;
            let f = tokio::fs::File::open(&tmp_path).await.map_err(io(path))?;
            f.sync_all().await.map_err(io(path))?;
            drop(f);
            rename_into_place(tmp, path, &file, &dir, force).await?;
            bytes
        }
    };
    Ok(Delivered::Rdb {
        path: path.to_path_buf(),
        bytes,
    })
}

/// The last step of every `--rdb` written beside its output: the finished, fsynced temp file
/// renamed over `file` (refusing one that appeared meanwhile unless `force`; `shown` is the
/// path as the user gave it), then the directory fsynced so the rename survives a power loss.
pub(super) async fn rename_into_place(
    tmp: TempFile,
    shown: &Path,
    file: &Path,
    dir: &Path,
    force: bool,
) -> Result<(), RestoreError> {
    if !force && tokio::fs::symlink_metadata(shown).await.is_ok() {
        return Err(RestoreError::Exists(shown.to_path_buf()));
    }
    tokio::fs::rename(tmp.path(), file)
        .await
        .map_err(|source| RestoreError::Io {
            path: shown.to_path_buf(),
            source,
        })?;
    tmp.keep();
    if let Ok(d) = tokio::fs::File::open(dir).await {
        d.sync_all().await.ok();
    }
    Ok(())
}

/// A temp file removed when dropped: on an error (ENOSPC mid-copy), and also when the restore
/// is abandoned on SIGINT/SIGTERM (main drops the future in flight), unless [`keep`](Self::keep)
/// says it was renamed into place.
pub(super) struct TempFile(Option<PathBuf>);

impl TempFile {
    pub(super) fn new(path: PathBuf) -> TempFile {
        TempFile(Some(path))
    }
    pub(super) fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
    pub(super) fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Where `--to` copies, and what the pre-flight learned about it.
pub struct LiveTarget<'a> {
    pub url: &'a RedisUrl,
    pub replace: bool,
    pub db_map: &'a [(u32, u32)],
    pub facts: Option<&'a TargetFacts>,
    /// Where the copy reports keys copied (the restore's copy phase).
    pub progress: &'a Progress,
    /// `--verify` (Some(true)), `--no-verify` (Some(false)), or by size (None).
    pub verify: Option<bool>,
}

/// `--to redis://…` (a cluster: [`to_cluster`]): copies every key of every db into the same db on the target with
/// `RESTORE key <abs expiry> <payload> ABSTTL [REPLACE]`, or element by element when its
/// payload is too big or its type unknown to the target ([`copy`]).
pub async fn to_live(server: &RedisServer, to: &LiveTarget<'_>) -> Result<Delivered, RestoreError> {
    if to.facts.is_some_and(|f| f.cluster) {
        let (counts, proof) = cluster::to_cluster(server, to).await?;
        return Ok(Delivered::To(counts, proof));
    }
    let (url, replace) = (to.url, to.replace);
    let mut target = Client::connect(url, Duration::from_secs(30)).await?;
    let mut c = server.client().await?;
    let mut counts = CopyCounts {
        target: url.to_string(),
        written: 0,
        skipped: 0,
        failed: 0,
        first_failure: None,
        by_elements: 0,
        relabelled: 0,
        notes: Vec::new(),
    };
    let (route, note) = copy::Route::of(to.facts);
    counts.notes.extend(note);
    let engine = server.binary.to_string();
    let mut target_db = 0u32;
    let mut scan = KeyScan::new(&mut c).await?;
    // Before the first write: a db the target lacks would otherwise abort the copy halfway.
    check_target_dbs(&mut target, url, to.facts, &scan.dbs, to.db_map).await?;
    let total = scan.dbs.iter().map(|&(_, n)| n).sum();
    to.progress.begin(Phase::Copy, Unit::Keys, Some(total));
    let mut skipped = verify_wanted(to.verify, total).then(super::proof::Skipped::default);
    while let Some((db, keys)) = scan.next_page(&mut c).await? {
        to.progress.add(keys.len() as u64);
        let db_before_map = db;
        let db = map_db(to.db_map, db);
        if target_db != db {
            target.ok(&["SELECT", &db.to_string()]).await?;
            target_db = db;
        }
        let mut batch = copy::Batch {
            src_db: db_before_map,
            replace,
            counts: &mut counts,
            engine: &engine,
            route: &route,
            skipped: skipped.as_mut(),
            redirects: None,
        };
        copy::copy_batch(&mut c, &mut target, &keys, &mut batch).await?;
    }
    let proof = match skipped {
        Some(skipped) => {
            Some(super::proof::prove(&mut c, &mut target, to.db_map, &skipped, to.progress).await?)
        }
        None => None,
    };
    Ok(Delivered::To(counts, proof))
}

/// `--verify` on by default below this many keys: above it the second pass costs about as much
/// as the copy, so it is asked for explicitly.
pub const VERIFY_AUTO_MAX_KEYS: u64 = 1_000_000;

/// Whether to prove the copy: `--verify` / `--no-verify`, else by size.
fn verify_wanted(mode: Option<bool>, keys: u64) -> bool {
    mode.unwrap_or(keys < VERIFY_AUTO_MAX_KEYS)
}

/// `--serve PORT`: the engine already runs on PORT; let it outlive this process.
pub fn serve(server: RedisServer) -> Delivered {
    let (port, dir, log) = (server.port, server.dir.clone(), server.log_path.clone());
    let pid = server.detach();
    Delivered::Serve {
        port,
        pid,
        dir,
        log,
        tls: false,
    }
}

/// `--serve PORT` with TLS: the server already speaks TLS on PORT; its plain port, which the
/// restore used on 127.0.0.1, is closed (`CONFIG SET port 0`) before it is handed over, so the
/// served instance is TLS only. Rejected: a TLS connection for the restore's own work too,
/// which would need a client certificate the server's CA signs when clients must present one.
pub async fn serve_tls(server: RedisServer, port: u16) -> Result<Delivered, RestoreError> {
    let mut c = server.client().await?;
    c.ok(&["CONFIG", "SET", "port", "0"]).await?;
    drop(c);
    let (dir, log) = (server.dir.clone(), server.log_path.clone());
    let pid = server.detach();
    Ok(Delivered::Serve {
        port,
        pid,
        dir,
        log,
        tls: true,
    })
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_like_redis() {
        let m = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes());
        assert!(m("*", "") && m("*", "abc") && m("user:*", "user:1") && !m("user:*", "users"));
        assert!(m("h?llo", "hello") && !m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-c]llo", "hbllo") && !m("h[a-c]llo", "hdllo"));
        assert!(m("a\\*b", "a*b") && !m("a\\*b", "axb"));
        assert!(m("*:*:x", "a:b:c:x") && !m("*:*:x", "a:b:c:y"));
        assert!(m("a*b*c", "aXXbYYc") && !m("a*b*c", "aXXbYY"));
        assert!(glob_match(b"\xff*", b"\xff\x00\x01"));
    }
}
