//! `--serve-cluster PORT --primaries N [--replicas R]`: a new local Redis Cluster holding the
//! restore, left running like `--serve`. N primaries on PORT… PORT+N-1, then R replicas of
//! each (primary 0's first) on the ports after; slots spread evenly over the primaries.
//!
//! Formed by hand rather than with `redis-cli --cluster create`: the same commands (config
//! epochs, ADDSLOTSRANGE, MEET, REPLICATE), without a second binary to find and drive, and
//! with errors that name the node. The nodes are private servers until the copy is done
//! ([`RedisServer`] kills them on drop: a failed or interrupted restore leaves none behind),
//! then detached one by one, as `--serve` detaches its one.

use super::cluster::to_cluster;
use super::{Delivered, LiveTarget, RestoreError};
use crate::client::{info_field, parse_info, Client, RedisUrl};
use crate::progress::Progress;
use crate::redis_server::{RedisServer, ServerOptions};
use flashback_format::resp::Frame;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the nodes may take to agree on the cluster (gossip takes about a second).
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// The cluster `--serve-cluster` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSpec {
    pub port: u16,
    pub primaries: u16,
    pub replicas: u16,
}

impl ClusterSpec {
    /// Every node's port, primaries first. Its cluster bus listens 10000 above.
    pub fn ports(&self) -> Vec<u16> {
        let n = self.primaries as u32 * (1 + self.replicas as u32);
        (0..n).map(|i| (self.port as u32 + i) as u16).collect()
    }

    /// The primary (index) of node `i`, for a replica.
    fn primary_of(&self, i: usize) -> Option<usize> {
        let p = self.primaries as usize;
        (i >= p).then(|| (i - p) / (self.replicas.max(1) as usize))
    }

    /// Primary `i`'s slots, inclusive.
    pub fn slots_of(&self, i: usize) -> (usize, usize) {
        let n = self.primaries.max(1) as usize;
        (
            i * super::slots::SLOTS / n,
            (i + 1) * super::slots::SLOTS / n - 1,
        )
    }
}

/// One node handed over.
#[derive(Debug, Clone)]
pub struct ServedNode {
    pub port: u16,
    pub pid: Option<u32>,
    pub dir: PathBuf,
    /// A replica: its primary's port. A primary: its slots.
    pub replica_of: Option<u16>,
    pub slots: Option<(usize, usize)>,
}

fn failed(port: u16, what: String) -> RestoreError {
    RestoreError::Output(format!("--serve-cluster: node 127.0.0.1:{port}: {what}"))
}

async fn must(c: &mut Client, port: u16, args: &[&str]) -> Result<Frame, RestoreError> {
    match c.call(args).await? {
        Frame::Error(e) => Err(failed(
            port,
            format!(
                "{} refused: {}",
                args.join(" "),
                String::from_utf8_lossy(&e)
            ),
        )),
        f => Ok(f),
    }
}

/// Starts the nodes, forms the cluster, copies the restore server's keys into it, and hands
/// the nodes over.
pub async fn serve_cluster(
    server: &RedisServer,
    spec: &ClusterSpec,
    db_map: &[(u32, u32)],
    verify: Option<bool>,
    progress: &Progress,
) -> Result<Delivered, RestoreError> {
    let mut nodes = Vec::new();
    for port in spec.ports() {
        let opts = ServerOptions {
            port: Some(port),
            may_outlive_us: true,
            extra_args: [
                "--cluster-enabled",
                "yes",
                // In the node's own directory (redis-server runs there).
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        };
        nodes.push(RedisServer::start(&server.binary, opts).await?);
    }
    form(&nodes, spec).await?;
    let url = RedisUrl::local(spec.port);
    let facts = crate::restore::preflight::check_target(&url).await?;
    let to = LiveTarget {
        url: &url,
        replace: false,
        db_map,
        facts: Some(&facts),
        progress,
        verify,
    };
    let (counts, proof) = to_cluster(server, &to).await?;
    wait_replicas(&nodes, spec).await?;
    let served = nodes
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let (port, dir) = (n.port, n.dir.clone());
            ServedNode {
                port,
                pid: n.detach(),
                dir,
                replica_of: spec.primary_of(i).map(|p| spec.port + p as u16),
                slots: spec.primary_of(i).is_none().then(|| spec.slots_of(i)),
            }
        })
        .collect();
    Ok(Delivered::ServeCluster {
        spec: *spec,
        nodes: served,
        counts,
        proof,
    })
}

/// Config epochs, slots, MEET, then REPLICATE, each node told directly; returns when every
/// node says `cluster_state:ok`.
async fn form(nodes: &[RedisServer], spec: &ClusterSpec) -> Result<(), RestoreError> {
    let mut conns = Vec::new();
    let mut ids = Vec::new();
    for n in nodes {
        let mut c = n.client().await?;
        let id = match must(&mut c, n.port, &["CLUSTER", "MYID"]).await? {
            Frame::Bulk(b) | Frame::Simple(b) => String::from_utf8_lossy(&b).into_owned(),
            other => {
                return Err(failed(
                    n.port,
                    format!("CLUSTER MYID answered {}", other.text()),
                ))
            }
        };
        ids.push(id);
        conns.push(c);
    }
    for (i, (c, n)) in conns.iter_mut().zip(nodes).enumerate() {
        // Distinct epochs before MEET, so no collision has to be resolved by gossip.
        must(
            c,
            n.port,
            &["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()],
        )
        .await?;
        if spec.primary_of(i).is_none() {
            let (lo, hi) = spec.slots_of(i);
            must(
                c,
                n.port,
                &["CLUSTER", "ADDSLOTSRANGE", &lo.to_string(), &hi.to_string()],
            )
            .await?;
        }
    }
    let first = nodes.first().map(|n| n.port).unwrap_or(spec.port);
    if let Some(c0) = conns.first_mut() {
        for n in nodes.iter().skip(1) {
            must(
                c0,
                first,
                &["CLUSTER", "MEET", "127.0.0.1", &n.port.to_string()],
            )
            .await?;
        }
    }
    let deadline = Instant::now() + FORM_TIMEOUT;
    let total = nodes.len().to_string();
    wait_all(
        &mut conns,
        nodes,
        deadline,
        "to know every other node",
        |info| info_field(info, "cluster_known_nodes") == Some(total.as_str()),
    )
    .await?;
    for (i, (c, n)) in conns.iter_mut().zip(nodes).enumerate() {
        let Some(p) = spec.primary_of(i) else {
            continue;
        };
        // A node learns that another is a primary by gossip, slightly after it learns of it.
        loop {
            match c.call(&["CLUSTER", "REPLICATE", &ids[p]]).await? {
                Frame::Error(e) if Instant::now() > deadline => {
                    return Err(failed(
                        n.port,
                        format!("CLUSTER REPLICATE refused: {}", String::from_utf8_lossy(&e)),
                    ))
                }
                Frame::Error(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => break,
            }
        }
    }
    wait_all(
        &mut conns,
        nodes,
        deadline,
        "to reach cluster_state:ok",
        |info| info_field(info, "cluster_state") == Some("ok"),
    )
    .await
}

async fn wait_all(
    conns: &mut [Client],
    nodes: &[RedisServer],
    deadline: Instant,
    what: &str,
    ok: impl Fn(&[(String, String)]) -> bool,
) -> Result<(), RestoreError> {
    for (c, n) in conns.iter_mut().zip(nodes) {
        loop {
            if let Frame::Bulk(t) = c.call(&["CLUSTER", "INFO"]).await? {
                if ok(&parse_info(&String::from_utf8_lossy(&t))) {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(failed(
                    n.port,
                    format!(
                        "did not come {what} within {} s; its log: {}",
                        FORM_TIMEOUT.as_secs(),
                        n.log_path.display()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Every replica has what its primary holds, so the cluster is handed over complete.
async fn wait_replicas(nodes: &[RedisServer], spec: &ClusterSpec) -> Result<(), RestoreError> {
    let deadline = Instant::now() + FORM_TIMEOUT;
    for (i, n) in nodes.iter().enumerate() {
        let Some(p) = spec.primary_of(i) else {
            continue;
        };
        let mut primary = nodes[p].client().await?;
        let mut c = n.client().await?;
        let want = offset(&mut primary, "master_repl_offset").await?;
        loop {
            let info = c.info("replication").await?;
            let up = info_field(&info, "master_link_status") == Some("up");
            let at: u64 = info_field(&info, "slave_repl_offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if up && at >= want {
                break;
            }
            if Instant::now() > deadline {
                return Err(failed(
                    n.port,
                    format!(
                        "the replica did not catch up with its primary (:{}) within {} s; its log: {}",
                        nodes[p].port,
                        FORM_TIMEOUT.as_secs(),
                        n.log_path.display()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

async fn offset(c: &mut Client, field: &str) -> Result<u64, RestoreError> {
    let info = c.info("replication").await?;
    Ok(info_field(&info, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}
