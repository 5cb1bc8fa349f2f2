//! Checks of a restore's output made before any restore work (DESIGN.md: "Before any restore
//! work, restore checks its output"): a restore can take minutes and a base as large as the
//! dataset, and a mistake in where it goes should cost a second, not that.
//!
//! - `--to`: the target answers, speaks Redis, accepts the credentials, is writable (not a
//!   replica), and says how many databases it has; what it says about its replication ids lets
//!   the caller warn about a restore into the captured source itself.
//! - `--serve PORT`: the port is valid and free.
//! - `--rdb PATH`: where the bytes will really go ([`RdbOut`]: a file replaced by rename, or a
//!   device / FIFO written through; a symlink followed), that an existing file is only replaced
//!   with `--force`, and that the place is writable.
//!
//! Some of it can only be known after the rebuild (which databases hold keys); that is checked
//! by the sink before its first write, from the facts gathered here ([`TargetFacts`]).

use super::{Output, RestoreError, RestoreRequest};
use crate::client::{info_field, parse_info, Client, ClientError, RedisUrl};
use crate::redis_server::{Product, ServerBinary};
use crate::store::{catalog, Store};
use flashback_format::resp::Frame;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the target may take to answer a pre-flight question.
const TARGET_TIMEOUT: Duration = Duration::from_secs(5);

/// What the pre-flight learned about a `--to` target.
#[derive(Debug, Clone, Default)]
pub struct TargetFacts {
    /// `CONFIG GET databases`; None when CONFIG is refused (managed services rename it): then
    /// each database is probed with SELECT before the first write.
    pub databases: Option<u32>,
    /// `master_replid` and `master_replid2` from `INFO replication` (empty when refused).
    pub replids: Vec<String>,
    /// `CONFIG GET proto-max-bulk-len`: the biggest argument the target takes, so the biggest
    /// DUMP payload a RESTORE can carry. None when CONFIG is refused (the copy then assumes the
    /// default, 512 MB, and says so).
    pub max_bulk: Option<u64>,
    /// What `INFO server` says the target is (`valkey_version` before `redis_version`: Valkey
    /// reports `redis_version:7.2.4` for compatibility), so which DUMP payload versions it
    /// takes. None when INFO is refused or unreadable: payloads are sent as they are.
    pub server: Option<(Product, (u32, u32, u32))>,
    /// `INFO cluster` says `cluster_enabled:1`: keys are routed by slot
    /// (`outputs::to_cluster`), and db 0 is the only one.
    pub cluster: bool,
}

impl TargetFacts {
    /// The target as a [`ServerBinary`] (no path), for its RDB version table.
    pub fn binary(&self) -> Option<ServerBinary> {
        self.server.map(|(product, version)| ServerBinary {
            path: PathBuf::new(),
            product,
            version,
        })
    }
}

/// (product, version) from `INFO server` text.
pub fn server_of_info(info: &[(String, String)]) -> Option<(Product, (u32, u32, u32))> {
    let (product, v) = match info_field(info, "valkey_version") {
        Some(v) => (Product::Valkey, v),
        None => (Product::Redis, info_field(info, "redis_version")?),
    };
    let mut it = v.trim().split('.').map(|p| p.parse::<u32>().ok());
    let major = it.next()??;
    let minor = it.next().flatten().unwrap_or(0);
    let patch = it.next().flatten().unwrap_or(0);
    Some((product, (major, minor, patch)))
}

/// Everything the pre-flight found; handed to [`super::execute`].
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub target: Option<TargetFacts>,
}

/// Runs the checks for `req.output`. Each failure is one line naming the fix.
pub async fn check_output(req: &RestoreRequest) -> Result<Checked, RestoreError> {
    super::check_request(req)?;
    match &req.output {
        Output::Rdb(path) => {
            let out = resolve_rdb(path, req.force)?;
            probe_writable(path, &out)?;
            Ok(Checked::default())
        }
        Output::Serve(port) => {
            check_port(*port)?;
            Ok(Checked::default())
        }
        Output::ServeTls(port, tls) => {
            check_port(*port)?;
            check_serve_tls(tls)?;
            Ok(Checked::default())
        }
        Output::ServeCluster(spec) => {
            check_cluster_ports(spec)?;
            Ok(Checked::default())
        }
        Output::To(url) => Ok(Checked {
            target: Some(check_target(url).await?),
        }),
    }
}

fn preflight(what: impl Into<String>) -> RestoreError {
    RestoreError::Preflight(what.into())
}

/// `--serve PORT --tls-cert --tls-key`: the files redis-server will load are readable PEM
/// files, checked here because redis-server's own complaint comes only after the restore.
fn check_serve_tls(tls: &super::ServeTls) -> Result<(), RestoreError> {
    let files = [
        ("--tls-cert", Some(&tls.cert), "CERTIFICATE-----"),
        ("--tls-key", Some(&tls.key), "PRIVATE KEY-----"),
        ("--tls-ca", tls.ca.as_ref(), "CERTIFICATE-----"),
    ];
    for (flag, path, marker) in files {
        let Some(path) = path else { continue };
        let text = std::fs::read(path).map_err(|e| {
            preflight(format!(
                "{flag} {}: cannot read it ({e}); check the path and its permissions",
                path.display()
            ))
        })?;
        if !String::from_utf8_lossy(&text).contains(marker) {
            return Err(preflight(format!(
                "{flag} {}: not a PEM file (no -----BEGIN …{marker} line)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// `--serve PORT`: a port redis-server can bind on 127.0.0.1 right now.
pub fn check_port(port: u16) -> Result<(), RestoreError> {
    if port == 0 {
        return Err(preflight(
            "--serve 0: pick a port from 1 to 65535 for the restored server",
        ));
    }
    // Bound and released at once: redis-server binds it moments later. Someone else could take
    // it in between; then the server's start fails with its own clear line, as before.
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => {
            drop(l);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(preflight(format!(
            "--serve {port}: 127.0.0.1:{port} is already in use: pick a free port, or stop what listens there"
        ))),
        Err(e) => Err(preflight(format!(
            "--serve {port}: cannot listen on 127.0.0.1:{port} ({e}): pick another port"
        ))),
    }
}

/// `--serve-cluster PORT`: every node's port and its cluster bus port (10000 above) are free.
fn check_cluster_ports(spec: &super::outputs::ClusterSpec) -> Result<(), RestoreError> {
    let ports = spec.ports();
    let last = spec.port as u32 + ports.len() as u32 - 1;
    if spec.port == 0 || last + 10000 > u16::MAX as u32 {
        return Err(preflight(format!(
            "--serve-cluster {}: its {} nodes need ports {}-{last} and their cluster bus ports 10000 above: pick a PORT from 1 to {}",
            spec.port,
            ports.len(),
            spec.port,
            u16::MAX as u32 - 10000 - ports.len() as u32 + 1
        )));
    }
    for p in ports {
        for q in [p, p + 10000] {
            check_port(q).map_err(|_| {
                preflight(format!(
                    "--serve-cluster {}: 127.0.0.1:{q} (for the node on port {p}{}) is in use or cannot be bound: pick another PORT, or stop what listens there",
                    spec.port,
                    if q == p { "" } else { "'s cluster bus" }
                ))
            })?;
        }
    }
    Ok(())
}

/// Where `--rdb` bytes really go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdbOut {
    /// A regular file (existing or not), after following symlinks: written to a temp file in
    /// `dir` and renamed over `file`, so it is the old file or the whole new one, never half.
    File { file: PathBuf, dir: PathBuf },
    /// A character or block device or a FIFO (`/dev/null`, a tape, a pipe to a compressor):
    /// written in place; replacing it by rename would swap a device node for a regular file.
    WriteThrough(PathBuf),
}

/// Follows symlinks from `path` (a dangling link resolves to the file it would create) and
/// refuses what cannot be an RDB destination.
pub fn resolve_rdb(path: &Path, force: bool) -> Result<RdbOut, RestoreError> {
    let shown = path.display();
    let mut real = path.to_path_buf();
    // 40 as the kernel's own limit on a chain of links (ELOOP).
    for _ in 0..40 {
        let meta = match std::fs::symlink_metadata(&real) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = parent_of(&real);
                return match std::fs::metadata(&dir) {
                    Ok(m) if m.is_dir() => Ok(RdbOut::File { file: real, dir }),
                    Ok(_) => Err(preflight(format!(
                        "--rdb {shown}: {} is not a directory: pick a path inside an existing directory",
                        dir.display()
                    ))),
                    Err(_) => Err(preflight(format!(
                        "--rdb {shown}: directory {} does not exist: create it first (mkdir -p {}) or pick another path",
                        dir.display(),
                        dir.display()
                    ))),
                };
            }
            Err(source) => return Err(RestoreError::Io { path: real, source }),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            let link = std::fs::read_link(&real).map_err(|source| RestoreError::Io {
                path: real.clone(),
                source,
            })?;
            real = parent_of(&real).join(link);
            continue;
        }
        if ft.is_dir() {
            return Err(preflight(format!(
                "--rdb {shown} is a directory: give a file name, e.g. --rdb {}",
                path.join("restore.rdb").display()
            )));
        }
        if !force {
            return Err(RestoreError::Exists(path.to_path_buf()));
        }
        if ft.is_file() {
            let dir = parent_of(&real);
            return Ok(RdbOut::File { file: real, dir });
        }
        use std::os::unix::fs::FileTypeExt;
        if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            return Ok(RdbOut::WriteThrough(real));
        }
        return Err(preflight(format!(
            "--rdb {shown} is a socket: give a file, a device or a FIFO"
        )));
    }
    Err(preflight(format!(
        "--rdb {shown}: too many levels of symbolic links: point it at a file"
    )))
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The temp file [`super::outputs::to_rdb`] writes next to `file`, and the pre-flight probe.
pub(crate) fn temp_name(file: &Path, what: &str) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "restore.rdb".into());
    parent_of(file).join(format!(".{name}.flashback-{}.{what}", std::process::id()))
}

/// Proves the destination can be written: creates and removes a probe file where the temp file
/// will go, or opens the device for writing. Permission bits alone would not do: root ignores
/// them, and a read-only mount or a full quota only shows on an actual create.
fn probe_writable(shown: &Path, out: &RdbOut) -> Result<(), RestoreError> {
    let fail = |e: std::io::Error, place: &Path| {
        preflight(format!(
            "--rdb {}: cannot write in {}: {e}; pick a writable place",
            shown.display(),
            place.display()
        ))
    };
    match out {
        RdbOut::File { file, dir } => {
            let probe = temp_name(file, "probe");
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .map_err(|e| fail(e, dir))?;
            std::fs::remove_file(&probe).map_err(|e| fail(e, dir))
        }
        RdbOut::WriteThrough(dev) => {
            // O_NONBLOCK: opening a FIFO for writing with no reader yet would block forever
            // here; ENXIO then says "nobody reads it" and is accepted (a reader may come later).
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(dev)
            {
                Ok(_) => Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
                Err(e) => Err(fail(e, dev)),
            }
        }
    }
}

/// `--to URL`: connects, authenticates, and learns what the copy needs to know.
pub async fn check_target(url: &RedisUrl) -> Result<TargetFacts, RestoreError> {
    let addr = format!("{}:{}", url.host, url.port);
    let mut c = Client::connect(url, TARGET_TIMEOUT)
        .await
        .map_err(|e| preflight(format!("--to {url}: {e}")))?;
    let not_redis = |what: String| {
        preflight(format!(
            "--to {url}: {addr} does not answer like a Redis server ({what}): check the host and port"
        ))
    };
    match c.call(&["PING"]).await {
        Ok(Frame::Simple(s)) if &s[..] == b"PONG" => {}
        Ok(Frame::Error(e)) if e.starts_with(b"NOAUTH") => {
            return Err(preflight(format!(
                "--to {url}: {addr} requires a password: put it in the URL, redis://[USER]:PASSWORD@{addr}"
            )))
        }
        Ok(Frame::Error(e)) if e.starts_with(b"NOPERM") => {
            return Err(preflight(format!(
                "--to {url}: the user may not run PING there ({}): grant it the commands restore needs (+@keyspace +@read +@write +restore +select +ping)",
                String::from_utf8_lossy(&e)
            )))
        }
        Ok(other) => return Err(not_redis(format!("PING answered {}", crate::show::key(other.text().as_bytes())))),
        Err(ClientError::Protocol(e, _)) => return Err(not_redis(e.to_string())),
        Err(ClientError::Timeout { .. }) => return Err(not_redis(format!("no answer to PING within {} s", TARGET_TIMEOUT.as_secs()))),
        Err(e) => return Err(preflight(format!("--to {url}: {e}"))),
    }
    let mut facts = TargetFacts::default();
    if let Ok(Frame::Bulk(text)) = c.call(&["INFO", "cluster"]).await {
        let info = parse_info(&String::from_utf8_lossy(&text));
        facts.cluster = info_field(&info, "cluster_enabled") == Some("1");
    }
    if facts.cluster {
        check_cluster_state(&mut c, url).await?;
    }
    if let Ok(Frame::Bulk(text)) = c.call(&["INFO", "replication"]).await {
        let info = parse_info(&String::from_utf8_lossy(&text));
        // A cluster replica is as good an entry point as a primary: the copy writes to the
        // primaries its slot map names.
        if info_field(&info, "role") == Some("slave") && !facts.cluster {
            let master = format!(
                "{}:{}",
                info_field(&info, "master_host").unwrap_or("?"),
                info_field(&info, "master_port").unwrap_or("?")
            );
            return Err(preflight(format!(
                "--to {url}: {addr} is a replica of {master} and refuses writes: restore into its primary"
            )));
        }
        for f in ["master_replid", "master_replid2"] {
            if let Some(id) = info_field(&info, f).filter(|id| id.bytes().any(|b| b != b'0')) {
                facts.replids.push(id.to_string());
            }
        }
    }
    if let Ok(Frame::Array(kv)) = c.call(&["CONFIG", "GET", "databases"]).await {
        facts.databases = match kv.as_slice() {
            [_, Frame::Bulk(n)] => std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()),
            _ => None,
        };
    }
    if let Ok(Frame::Array(kv)) = c.call(&["CONFIG", "GET", "proto-max-bulk-len"]).await {
        facts.max_bulk = match kv.as_slice() {
            [_, Frame::Bulk(n)] => std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()),
            _ => None,
        };
    }
    if let Ok(Frame::Bulk(text)) = c.call(&["INFO", "server"]).await {
        facts.server = server_of_info(&parse_info(&String::from_utf8_lossy(&text)));
    }
    if facts.cluster {
        // CONFIG GET databases answers 16 on a cluster node, which refuses SELECT 1.
        facts.databases = Some(1);
    }
    Ok(facts)
}

/// A cluster `--to`: `cluster_state:ok` (every slot served by a reachable primary), or the
/// copy would fail key by key.
async fn check_cluster_state(c: &mut Client, url: &RedisUrl) -> Result<(), RestoreError> {
    let reply = c
        .call(&["CLUSTER", "INFO"])
        .await
        .map_err(|e| preflight(format!("--to {url}: {e}")))?;
    let Frame::Bulk(text) = reply else {
        return Err(preflight(format!(
            "--to {url}: the cluster node refuses CLUSTER INFO ({}): grant the user +cluster|info +cluster|slots",
            crate::show::key(reply.text().as_bytes())
        )));
    };
    let info = parse_info(&String::from_utf8_lossy(&text));
    match info_field(&info, "cluster_state") {
        Some("ok") => Ok(()),
        state => Err(preflight(format!(
            "--to {url}: the cluster's state is {} (cluster_state:ok is needed: every slot assigned to a reachable primary): fix the cluster first (redis-cli --cluster check HOST:PORT)",
            state.unwrap_or("unknown")
        ))),
    }
}

/// A warning, when the `--to` target is the captured source (or one of its replicas) itself.
///
/// Judged by replication id: a primary's `master_replid` is a 40-hex random id of its history,
/// and every generation records the one it was captured from; after a failover the promoted
/// replica keeps the old id as `master_replid2`. Rejected: comparing addresses, which differ
/// for one server reached by another name, NAT or a proxy, and match for different servers
/// behind one address; and `run_id`, which the store does not record.
pub async fn same_as_source(
    store: &Store,
    source: &str,
    target: &TargetFacts,
    url: &RedisUrl,
) -> Option<String> {
    if target.replids.is_empty() {
        return None;
    }
    let gens = catalog::load_generations(store, source).await.ok()?;
    let hit = gens.iter().find_map(|g| {
        let m = g.manifest.as_ref()?;
        target.replids.contains(&m.replid).then(|| g.id.clone())
    })?;
    Some(format!(
        "warning: --to {url} is the captured source '{source}' itself (its replication id is the one generation {hit} was captured from): the restore writes into it; keys it holds are left alone unless --replace"
    ))
}

/// Before the first write to the target: every database that holds keys (after `--db-map`)
/// exists there. `dbs` are (db on the restore server, key count).
pub async fn check_target_dbs(
    target: &mut Client,
    url: &RedisUrl,
    facts: Option<&TargetFacts>,
    dbs: &[(u32, u64)],
    db_map: &[(u32, u32)],
) -> Result<(), RestoreError> {
    for &(db, keys) in dbs {
        let to = map_db(db_map, db);
        let missing = match facts.and_then(|f| f.databases) {
            Some(n) => to >= n,
            None => matches!(
                target.call(&["SELECT", &to.to_string()]).await?,
                Frame::Error(_)
            ),
        };
        if !missing {
            continue;
        }
        let has = match facts.and_then(|f| f.databases) {
            Some(n) => format!("has {n} databases (0-{})", n.saturating_sub(1)),
            None => format!("refuses SELECT {to}"),
        };
        let mapped = if to == db {
            String::new()
        } else {
            format!(" (mapped to db {to})")
        };
        return Err(preflight(format!(
            "db {db}{mapped} of the restore holds {keys} keys, but the target {url} {has}: send it to an existing db with --db-map {db}:N, or raise 'databases' in the target's config; nothing was written"
        )));
    }
    // Leave the connection on db 0, where the copy expects to start.
    target.ok(&["SELECT", "0"]).await?;
    Ok(())
}

/// `--db-map S:D,…`: where keys of source db `db` go (unmapped dbs keep their number).
pub fn map_db(db_map: &[(u32, u32)], db: u32) -> u32 {
    db_map
        .iter()
        .find(|(s, _)| *s == db)
        .map(|&(_, d)| d)
        .unwrap_or(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdb_destinations() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let file = p.join("a.rdb");
        assert_eq!(
            resolve_rdb(&file, false).unwrap(),
            RdbOut::File {
                file: file.clone(),
                dir: p.to_path_buf()
            }
        );
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            resolve_rdb(&file, false),
            Err(RestoreError::Exists(_))
        ));
        let link = p.join("link.rdb");
        std::os::unix::fs::symlink("a.rdb", &link).unwrap();
        assert_eq!(
            resolve_rdb(&link, true).unwrap(),
            RdbOut::File {
                file: p.join("a.rdb"),
                dir: p.to_path_buf()
            }
        );
        let dangling = p.join("dangling.rdb");
        std::os::unix::fs::symlink("new.rdb", &dangling).unwrap();
        assert_eq!(
            resolve_rdb(&dangling, false).unwrap(),
            RdbOut::File {
                file: p.join("new.rdb"),
                dir: p.to_path_buf()
            }
        );
        assert_eq!(
            resolve_rdb(Path::new("/dev/null"), true).unwrap(),
            RdbOut::WriteThrough("/dev/null".into())
        );
        let dir_err = resolve_rdb(p, true).unwrap_err().to_string();
        assert!(dir_err.contains("is a directory"), "{dir_err}");
        let missing = resolve_rdb(&p.join("no/x.rdb"), false)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("does not exist"), "{missing}");
        let loop_a = p.join("loop");
        std::os::unix::fs::symlink("loop", &loop_a).unwrap();
        assert!(resolve_rdb(&loop_a, true).is_err());
    }

    #[test]
    fn target_server_from_info() {
        let info = |t: &str| parse_info(t);
        assert_eq!(
            server_of_info(&info("redis_version:7.0.15\r\n")),
            Some((Product::Redis, (7, 0, 15)))
        );
        assert_eq!(
            server_of_info(&info(
                "redis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.8\r\n"
            )),
            Some((Product::Valkey, (8, 1, 8)))
        );
        assert_eq!(server_of_info(&info("uptime:3\r\n")), None);
    }

    #[test]
    fn db_map_lookup() {
        let m = [(1, 0), (3, 2)];
        assert_eq!((map_db(&m, 1), map_db(&m, 3), map_db(&m, 5)), (0, 2, 5));
    }
}
