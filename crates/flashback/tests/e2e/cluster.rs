//! Capture of a Redis Cluster (`capture --cluster`): a 3-primary + 3-replica cluster, one
//! agent for every shard, a `CLUSTER FAILOVER` and a slot migration (SETSLOT + MIGRATE)
//! mid-capture; the whole cluster's key state at several instants must come back from one
//! restored RDB, and `--shard` restores one shard.

use crate::util::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

struct Cluster {
    nodes: Vec<RedisProc>,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(6, 1)
    }

    fn node_proc() -> RedisProc {
        RedisProc::start(&[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "3000",
        ])
    }

    fn start_with(nodes: usize, replicas: usize) -> Cluster {
        let nodes: Vec<RedisProc> = (0..nodes).map(|_| Cluster::node_proc()).collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend([
            "--cluster-replicas".to_string(),
            replicas.to_string(),
            "--cluster-yes".to_string(),
        ]);
        let out = std::process::Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = Cluster { nodes };
        c.wait_healthy();
        c
    }

    /// Every node says cluster_state:ok, every replica's link is up, and the first node (the
    /// agent's seed) calls every node online: a replica whose offset it has not yet heard by
    /// gossip is `loading` in CLUSTER SHARDS, and the agent would link to its primary.
    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        'again: loop {
            assert!(Instant::now() < deadline, "the cluster did not settle");
            std::thread::sleep(Duration::from_millis(100));
            let shards = self.nodes[0].conn().call(&["CLUSTER", "SHARDS"]);
            let healths = shard_healths(&shards);
            if healths.len() != self.nodes.len() || healths.iter().any(|h| h != "online") {
                continue 'again;
            }
            for n in &self.nodes {
                let info = n.conn().call(&["CLUSTER", "INFO"]).text();
                if !info.contains("cluster_state:ok") {
                    continue 'again;
                }
                let repl = n.info_replication();
                if repl.contains("role:slave") && !repl.contains("master_link_status:up") {
                    continue 'again;
                }
            }
            return;
        }
    }

    fn node(&self, port: u16) -> &RedisProc {
        self.nodes.iter().find(|n| n.port == port).unwrap()
    }

    fn primaries(&self) -> Vec<&RedisProc> {
        self.nodes
            .iter()
            .filter(|n| n.info_replication().contains("role:master"))
            .collect()
    }

    fn id(&self, port: u16) -> String {
        self.node(port).conn().call(&["CLUSTER", "MYID"]).text()
    }

    /// A command sent where the cluster says (following MOVED and ASK).
    fn call(&self, args: &[&[u8]]) -> Reply {
        let mut port = self.nodes[0].port;
        let mut asking = false;
        for _ in 0..5 {
            let mut c = Conn::connect(port).unwrap();
            if asking {
                c.call(&["ASKING"]);
            }
            let r = c.call(args);
            if let Reply::Error(e) = &r {
                let e = String::from_utf8_lossy(e).into_owned();
                let mut w = e.split_whitespace();
                match w.next() {
                    Some(kind @ ("MOVED" | "ASK")) => {
                        let addr = w.nth(1).unwrap();
                        port = addr.rsplit(':').next().unwrap().parse().unwrap();
                        asking = kind == "ASK";
                        continue;
                    }
                    _ => panic!("{e}"),
                }
            }
            return r;
        }
        panic!("too many redirections");
    }

    /// Every key of every primary: name -> type and DEBUG DIGEST-VALUE.
    fn state(&self) -> BTreeMap<Vec<u8>, String> {
        let mut all = BTreeMap::new();
        for p in self.primaries() {
            all.extend(key_state(&mut p.conn()));
        }
        all
    }

    /// Until the agent holds one link per shard, each on a replica.
    fn wait_agent_on_replicas(&self, agent: &Agent) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let on = agent_link_ports(self);
            let replicas = on
                .iter()
                .filter(|p| self.node(**p).info_replication().contains("role:slave"))
                .count();
            if on.len() == 3 && replicas == 3 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent's links are not all on replicas ({on:?}):\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Until every replication link of the agent (listening-port 0) is caught up with its
    /// node's offset, and there is one per shard.
    fn wait_agent_caught_up(&self, agent: &Agent) {
        self.wait_links_caught_up(3, agent)
    }

    /// As [`Cluster::wait_agent_caught_up`], for a cluster of `shards` shards.
    fn wait_links_caught_up(&self, shards: usize, agent: &Agent) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut links = 0;
            let mut behind = 0;
            for n in &self.nodes {
                let info = n.info_replication();
                let own = parse_info(&info).master_offset;
                for l in info.lines().filter(|l| l.starts_with("slave")) {
                    if l.contains("port=0,") && l.contains("state=online") {
                        links += 1;
                        let off: u64 = l
                            .split(',')
                            .find_map(|f| f.strip_prefix("offset="))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if off != own {
                            behind += 1;
                        }
                    }
                }
            }
            if links == shards && behind == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not catch up: {links} links, {behind} behind:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Every node's `health` in a CLUSTER SHARDS reply (RESP2: flat name/value arrays).
fn shard_healths(shards: &Reply) -> Vec<String> {
    let mut out = Vec::new();
    for shard in shards.array() {
        let fields = shard.array();
        for kv in fields.chunks(2) {
            if kv[0].text() == "nodes" {
                for node in kv[1].array() {
                    for f in node.array().chunks(2) {
                        if f[0].text() == "health" {
                            out.push(f[1].text());
                        }
                    }
                }
            }
        }
    }
    out
}

fn key_state(c: &mut Conn) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    for k in c.call(&["KEYS", "*"]).array() {
        let k = k.bytes().to_vec();
        let t = c.call(&[b"TYPE".as_slice(), &k]).text();
        let d = c.call(&[b"DEBUG".as_slice(), b"DIGEST-VALUE", &k]);
        out.insert(k, format!("{t}:{:?}", d));
    }
    out
}

fn workload(c: &Cluster, round: &str, n: usize) {
    for i in 0..n {
        // Hash tags spread the keys over every shard; {m} is the slot that migrates.
        let tag = ["a", "b", "c", "d", "e", "m"][i % 6];
        c.call(&[
            b"SET",
            format!("{{{tag}}}:s:{i}").as_bytes(),
            format!("{round}{i}").as_bytes(),
        ]);
        c.call(&[
            b"HSET",
            format!("{{{tag}}}:h").as_bytes(),
            format!("f{i}").as_bytes(),
            round.as_bytes(),
        ]);
        c.call(&[
            b"RPUSH",
            format!("{{{tag}}}:l").as_bytes(),
            round.as_bytes(),
        ]);
        if i % 5 == 0 {
            c.call(&[b"DEL", format!("{{{tag}}}:s:{}", i / 2).as_bytes()]);
        }
    }
}

/// The restore's key state; `log` (the agent's) is printed if the restore fails.
fn restored_state(store: &std::path::Path, args: &[&str], log: &str) -> BTreeMap<Vec<u8>, String> {
    let dir = tempfile::tempdir().unwrap();
    let rdb = dir.path().join("r.rdb");
    let mut all: Vec<&std::ffi::OsStr> = vec!["restore".as_ref(), "--store".as_ref()];
    all.push(store.as_os_str());
    all.extend(args.iter().map(|a| a.as_ref() as &std::ffi::OsStr));
    all.extend(["--rdb".as_ref(), rdb.as_os_str()]);
    let out = run_flashback(&all, Duration::from_secs(120));
    assert_eq!(
        out.code,
        Some(0),
        "restore failed:\n{}\nagent log:\n{log}",
        out.all()
    );
    let server = RedisProc::start_with_rdb(&rdb, &[]);
    key_state(&mut server.conn())
}

#[test]
fn cluster_capture_through_failover_and_slot_migration() {
    let started = Instant::now();
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(
        cluster.nodes[0].port,
        &store,
        &["--cluster", "--name", "c", "--base-every", "0"],
    );
    // The failover below is of the agent's node, a replica: a link that started on a primary
    // (its replica not yet known online by gossip) must have moved first, or the takeover
    // would truly lose the bytes the replica lacked.
    cluster.wait_agent_on_replicas(&agent);
    vouched_instant(&store);
    workload(&cluster, "one", 60);
    cluster.wait_agent_caught_up(&agent);
    let state = cluster.state();
    let mut points = vec![("T1", vouched_instant(&store), state)];

    // A coordinated failover in the shard owning {a}: its replica (the agent's node) takes
    // over, the old primary becomes its replica.
    let slot_a = cluster.call(&[b"CLUSTER", b"KEYSLOT", b"{a}"]).int();
    let owner_a = owner_port(&cluster, slot_a);
    let replica = cluster
        .nodes
        .iter()
        .find(|n| {
            let i = n.info_replication();
            i.contains("role:slave") && i.contains(&format!("master_port:{owner_a}"))
        })
        .unwrap()
        .port;
    cluster
        .node(replica)
        .conn()
        .call(&["CLUSTER", "FAILOVER", "TAKEOVER"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while owner_port(&cluster, slot_a) != replica {
        assert!(Instant::now() < deadline, "the failover did not happen");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.wait_healthy();
    // The promoted node dropped the agent's link to announce its new replication id; the
    // agent continued on it (the shard's only online node), then moves to the demoted primary
    // once that is an online replica: points are taken after that move.
    cluster.wait_agent_on_replicas(&agent);
    vouched_instant(&store);
    workload(&cluster, "two", 60);
    cluster.wait_agent_caught_up(&agent);
    let state = cluster.state();
    points.push(("T2", vouched_instant(&store), state));
    // The cluster's metrics file: every shard's link up, on a replica, and its window.
    wait_cluster_metrics(&store, &agent);
    // A mark with no write since T2's state was read: restoring it must give that state.
    let mark_id = mark(&store, cluster.nodes[0].port).unwrap_or_else(|o| panic!("{}", o.all()));

    // Slot {m} moves to another primary: keys leave one shard (DEL) and arrive in another
    // (RESTORE-ASKING).
    let slot_m = cluster.call(&[b"CLUSTER", b"KEYSLOT", b"{m}"]).int();
    let from = owner_port(&cluster, slot_m);
    let to = cluster
        .primaries()
        .iter()
        .map(|p| p.port)
        .find(|p| *p != from)
        .unwrap();
    migrate_slot(&cluster, slot_m, from, to);
    cluster.wait_healthy();
    workload(&cluster, "three", 60);
    cluster.wait_agent_caught_up(&agent);
    let state = cluster.state();
    points.push(("T3", vouched_instant(&store), state));

    let info = info_json(&store);
    agent.stop();
    let log = agent.log_text();

    let src = info["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "c")
        .unwrap_or_else(|| panic!("no source c in {info}"));
    let shards = src["cluster"]["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3, "{src}");
    for sh in shards {
        assert!(sh["window"]["to_ms"].as_u64().is_some(), "{sh}");
    }

    for (label, t, want) in &points {
        let got = restored_state(&store, &["--name", "c", "--at", &at_arg(*t)], &log);
        assert_eq!(
            got.len(),
            want.len(),
            "{label}: key count; agent log:\n{log}"
        );
        assert!(got == *want, "{label}: the restored keys differ");
    }
    // The mark, shard by shard at its own cut.
    let got = restored_state(&store, &["--name", "c", "--at-mark", &mark_id], &log);
    assert!(got == points[1].2, "--at-mark: the restored keys differ");
    // Into a fresh cluster of another shape (3 primaries, no replica) by --to…
    let fresh = Cluster::start_with(3, 0);
    let to = format!("redis://127.0.0.1:{}", fresh.nodes[0].port);
    let out = restore_cli(
        &store,
        &["--name", "c", "--at", &at_arg(points[1].1), "--to", &to],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        fresh.state() == points[1].2,
        "--to a cluster: the keys differ\n{}",
        out.stdout
    );
    drop(fresh);
    // …and into a new local cluster of 2 primaries by --serve-cluster.
    let port = crate::cluster_restore::free_cluster_ports(2);
    let p = port.to_string();
    let out = restore_cli(
        &store,
        &[
            "--name",
            "c",
            "--at",
            &at_arg(points[2].1),
            "--serve-cluster",
            &p,
            "--primaries",
            "2",
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let served = served_state(&out, &[port, port + 1]);
    assert!(
        served == points[2].2,
        "--serve-cluster: the keys differ\n{}",
        out.stdout
    );
    // A key selection of the whole cluster: every shard's matching keys, no other.
    let got = restored_state(&store, &["--name", "c", "--latest", "--keys", "{m}*"], &log);
    let want: BTreeMap<_, _> = points[2]
        .2
        .iter()
        .filter(|(k, _)| k.starts_with(b"{m}"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(!want.is_empty() && got == want, "--keys of a cluster");
    // One shard alone: its keys only, a strict part of the whole.
    let first = shards[0]["label"].as_str().unwrap().to_string();
    let one = restored_state(
        &store,
        &["--name", "c", "--shard", &first, "--latest"],
        &log,
    );
    let whole = &points[2].2;
    assert!(!one.is_empty() && one.len() < whole.len());
    assert!(one.iter().all(|(k, v)| whole.get(k) == Some(v)));
    // That shard's cut of the mark: its part of T2's state.
    let one = restored_state(
        &store,
        &["--name", "c", "--shard", &first, "--at-mark", &mark_id],
        &log,
    );
    assert!(!one.is_empty() && one.iter().all(|(k, v)| points[1].2.get(k) == Some(v)));
    // An offset is one shard's own: refused for the whole cluster, in one line.
    let out = restore_cli(
        &store,
        &["--name", "c", "--at-offset", "5", "--rdb", "/tmp/x"],
    );
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("add --shard ID"), "{}", out.stderr);
    // One generation per shard: the failover continued by partial resync.
    for sh in shards {
        assert_eq!(sh["generations"].as_u64(), Some(1), "{sh}\n{log}");
    }
    eprintln!("cluster test: {:.1} s", started.elapsed().as_secs_f64());
}

/// Until `sources/c/agent.prom` shows each of the 3 shards streaming from a replica, with its
/// window and lag, and the cluster's common window.
fn wait_cluster_metrics(store: &std::path::Path, agent: &Agent) {
    let path = store.join("sources/c/agent.prom");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let count = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
        let up = text
            .lines()
            .filter(|l| {
                l.starts_with("flashback_link_up{source=\"c\",shard=\"s") && l.ends_with(" 1")
            })
            .count();
        let on_replicas = text
            .lines()
            .filter(|l| l.starts_with("flashback_link_info{") && l.contains("role=\"replica\""))
            .count();
        if up == 3
            && on_replicas == 3
            && count("flashback_window_start_seconds{") == 3
            && count("flashback_lag_seconds{") == 3
            && count("flashback_cluster_window_end_seconds{source=\"c\"}") == 1
            && text.matches("# HELP flashback_link_up ").count() == 1
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never showed every shard:\n{text}\nagent log:\n{}",
            path.display(),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `flashback restore --store STORE ARGS…`.
fn restore_cli(store: &std::path::Path, args: &[&str]) -> Output {
    let mut all: Vec<&std::ffi::OsStr> = vec!["restore".as_ref(), "--store".as_ref()];
    all.push(store.as_os_str());
    all.extend(args.iter().map(|a| a.as_ref() as &std::ffi::OsStr));
    run_flashback(&all, Duration::from_secs(120))
}

/// `flashback mark` of cluster source c through the node on `port`: the mark's id, after
/// checking it holds one cut per shard.
fn mark(store: &std::path::Path, port: u16) -> Result<String, Output> {
    let url = format!("redis://127.0.0.1:{port}");
    let mut all: Vec<&std::ffi::OsStr> = vec!["mark".as_ref(), "--store".as_ref()];
    all.push(store.as_os_str());
    let rest = [
        "--name",
        "c",
        "--source",
        url.as_str(),
        "--json",
        "--pause",
        "500",
    ];
    all.extend(rest.iter().map(|a| a.as_ref() as &std::ffi::OsStr));
    let out = run_flashback(&all, Duration::from_secs(30));
    if out.code != Some(0) {
        return Err(out);
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let cuts = v["cuts"].as_array().unwrap();
    assert_eq!(cuts.len(), 3, "{v}");
    assert!(
        cuts.iter()
            .all(|c| c["shard"].as_str().unwrap().starts_with('s')),
        "{v}"
    );
    Ok(v["id"].as_str().unwrap().to_string())
}

/// The key state of a `--serve-cluster` whose nodes listen on `ports`, then stops them by the
/// pids the restore printed and removes their directories.
fn served_state(out: &Output, ports: &[u16]) -> BTreeMap<Vec<u8>, String> {
    let mut all = BTreeMap::new();
    for &p in ports {
        all.extend(key_state(&mut Conn::connect(p).unwrap()));
    }
    let pids: Vec<String> = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("stop:    kill "))
        .expect("a stop line")
        .split("(or")
        .next()
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(pids.len(), ports.len(), "{}", out.stdout);
    assert!(std::process::Command::new("kill")
        .args(&pids)
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in &pids {
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "pid {pid} still runs after kill");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for d in out.stdout.lines().filter_map(|l| l.split(", dir ").nth(1)) {
        let _ = std::fs::remove_dir_all(d.trim_end_matches(')'));
    }
    all
}

/// An instant after now that every shard's restore by time accepts (`restore --dry-run`), so
/// a point taken with no write since the state was read is exact. A reconnect (a failover,
/// a link moving to a replica) leaves an uncertain interval from the agent's last evidence
/// until it has caught up, which a restore by time rightly refuses; while it is open the
/// store cannot show it yet, so the instant counts only once an instant 300 ms later is
/// accepted too (the agent vouched through both). It also orders the next disruption after
/// the agent vouched.
fn vouched_instant(store: &std::path::Path) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    'next: while Instant::now() < deadline {
        let t = now_ms();
        std::thread::sleep(Duration::from_millis(300));
        for probe in [t, now_ms()] {
            let until = Instant::now() + Duration::from_secs(3);
            loop {
                std::thread::sleep(Duration::from_millis(100));
                let out = dry_run_at(store, probe);
                if out.code == Some(0) {
                    break;
                }
                last = out.all();
                if Instant::now() > until {
                    continue 'next;
                }
            }
        }
        return t;
    }
    panic!("no instant the agent vouches for within 30 s: {last}");
}

fn dry_run_at(store: &std::path::Path, t: u64) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec!["restore".as_ref(), "--store".as_ref()];
    args.push(store.as_os_str());
    let at = at_arg(t);
    let rest = ["--name", "c", "--at", at.as_str(), "--dry-run"];
    args.extend(rest.iter().map(|a| a.as_ref() as &std::ffi::OsStr));
    run_flashback(&args, Duration::from_secs(30))
}

/// Moves `slot` from the primary on `from` to the one on `to` as redis-cli's reshard does:
/// IMPORTING/MIGRATING, MIGRATE of its keys (DEL on one shard, RESTORE-ASKING on the other),
/// then SETSLOT NODE on every primary.
fn migrate_slot(cluster: &Cluster, slot: i64, from: u16, to: u16) {
    let (from_id, to_id) = (cluster.id(from), cluster.id(to));
    let s = slot.to_string();
    cluster
        .node(to)
        .conn()
        .call(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]);
    cluster
        .node(from)
        .conn()
        .call(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]);
    let keys = cluster
        .node(from)
        .conn()
        .call(&["CLUSTER", "GETKEYSINSLOT", &s, "1000"]);
    let mut migrate: Vec<Vec<u8>> = [
        "MIGRATE",
        "127.0.0.1",
        &to.to_string(),
        "",
        "0",
        "5000",
        "KEYS",
    ]
    .iter()
    .map(|a| a.as_bytes().to_vec())
    .collect();
    assert!(!keys.array().is_empty());
    migrate.extend(keys.array().iter().map(|k| k.bytes().to_vec()));
    let r = cluster.node(from).conn().call(&migrate);
    assert!(!r.is_error(), "MIGRATE: {r:?}");
    for p in cluster.primaries() {
        p.conn().call(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
    }
}

/// `CLUSTER REPLICATE id` on `node`, retried until the node knows that primary (MEET's
/// handshake takes a moment).
fn replicate(node: &RedisProc, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = node.conn().call(&["CLUSTER", "REPLICATE", id]);
        if !r.is_error() {
            return;
        }
        assert!(Instant::now() < deadline, "CLUSTER REPLICATE: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn owner_port(c: &Cluster, slot: i64) -> u16 {
    let slots = c.nodes[0].conn().call(&["CLUSTER", "SLOTS"]);
    for r in slots.array() {
        let a = r.array();
        if a[0].int() <= slot && slot <= a[1].int() {
            return a[2].array()[1].int() as u16;
        }
    }
    panic!("slot {slot} has no owner");
}

/// The ports of the nodes holding one of the agent's links (listening-port 0).
fn agent_link_ports(c: &Cluster) -> Vec<u16> {
    c.nodes
        .iter()
        .filter(|n| {
            n.info_replication()
                .lines()
                .any(|l| l.starts_with("slave") && l.contains("port=0,"))
        })
        .map(|n| n.port)
        .collect()
}

/// A shard with no replica is captured from its primary; once a replica joins and is online,
/// the link moves to it (the primary is left alone, as the default promises) and the same
/// generation continues by PSYNC: nothing lost, no full resync.
#[test]
fn a_link_on_a_primary_moves_to_a_replica_once_one_is_online() {
    let mut cluster = Cluster::start_with(3, 0);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(
        cluster.nodes[0].port,
        &store,
        &["--cluster", "--name", "c", "--base-every", "0"],
    );
    workload(&cluster, "one", 30);
    cluster.wait_agent_caught_up(&agent);
    let primary = cluster.nodes[0].port;
    assert!(agent_link_ports(&cluster).contains(&primary));

    // A replica for the first node's shard joins: MEET, then REPLICATE.
    let replica = Cluster::node_proc();
    let id = cluster.id(primary);
    replica
        .conn()
        .call(&["CLUSTER", "MEET", "127.0.0.1", &primary.to_string()]);
    replicate(&replica, &id);
    let replica_port = replica.port;
    cluster.nodes.push(replica);
    cluster.wait_healthy();
    // Writes go on while the link moves.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0;
    while !agent_link_ports(&cluster).contains(&replica_port) {
        assert!(
            Instant::now() < deadline,
            "the agent's link did not move to the replica:\n{}",
            agent.log_text()
        );
        workload(&cluster, &format!("w{round}"), 6);
        round += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    workload(&cluster, "two", 30);
    cluster.wait_agent_caught_up(&agent);
    let want = cluster.state();
    vouched_instant(&store);
    assert!(!agent_link_ports(&cluster).contains(&primary));
    let info = info_json(&store);
    agent.stop();
    let log = agent.log_text();
    assert!(log.contains("moving the link off the primary"), "{log}");
    let src = info["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "c")
        .unwrap_or_else(|| panic!("no source c in {info}"));
    for sh in src["cluster"]["shards"].as_array().unwrap() {
        assert_eq!(sh["generations"].as_u64(), Some(1), "{sh}\n{log}");
    }
    let got = restored_state(&store, &["--name", "c", "--latest"], &log);
    assert!(got == want, "the restored keys differ; agent log:\n{log}");
}

/// Marks taken while one client writes counters shard after shard (round r: INCR on every
/// shard's counter in a fixed order): a consistent cut restores counters of the form
/// r+1, …, r+1, r, …, r in that order. Cuts of each shard at a different instant would show
/// counters apart by more than one, or out of order. Both `flashback mark` and the agent's
/// own `--mark-every` marks are checked.
#[test]
fn cluster_marks_mid_workload_are_one_instant_of_every_shard() {
    let cluster = Cluster::start_with(3, 0);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(
        cluster.nodes[0].port,
        &store,
        &[
            "--cluster",
            "--name",
            "c",
            "--base-every",
            "0",
            "--mark-every",
            "1s",
            "--mark-pause",
            "500",
        ],
    );
    // One counter per shard, each in a slot its primary owns.
    let mut counters: Vec<(String, u16)> = Vec::new();
    for tag in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"] {
        let key = format!("{{{tag}}}:n");
        let slot = cluster
            .call(&[b"CLUSTER", b"KEYSLOT", key.as_bytes()])
            .int();
        let owner = owner_port(&cluster, slot);
        if counters.iter().all(|(_, p)| *p != owner) {
            counters.push((key, owner));
        }
    }
    assert_eq!(counters.len(), 3);
    vouched_instant(&store);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, counters) = (stop.clone(), counters.clone());
        std::thread::spawn(move || {
            let mut conns: Vec<Conn> = counters
                .iter()
                .map(|(_, p)| Conn::connect(*p).unwrap())
                .collect();
            let mut rounds = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (c, (k, _)) in conns.iter_mut().zip(&counters) {
                    let r = c.call(&["INCR", k]);
                    assert!(!r.is_error(), "{r:?}");
                }
                rounds += 1;
            }
            rounds
        })
    };
    let began = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let mut ids = Vec::new();
    let mut instants = Vec::new();
    for _ in 0..3 {
        ids.push(mark(&store, cluster.nodes[1].port).unwrap_or_else(|o| panic!("{}", o.all())));
        std::thread::sleep(Duration::from_millis(200));
        instants.push(now_ms());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    let round_ms = began.elapsed().as_secs_f64() * 1000.0 / rounds.max(1) as f64;
    cluster.wait_agent_caught_up(&agent);
    vouched_instant(&store);
    agent.stop();
    let log = agent.log_text();
    let marks: Vec<String> = std::fs::read_dir(store.join("sources/c/marks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".mark"))
        .collect();
    let own: Vec<String> = marks
        .iter()
        .filter(|n| !ids.iter().any(|id| n.contains(id.as_str())))
        .map(|n| {
            // <time>-<id>.mark, the id being m-<time> for the agent's own marks.
            let stem = n.trim_end_matches(".mark");
            stem[stem.find('-').unwrap() + 1..].to_string()
        })
        .collect();
    assert!(
        !own.is_empty(),
        "--mark-every made no mark: {marks:?}\n{log}"
    );
    ids.extend(own);
    let mut seen = Vec::new();
    for id in &ids {
        let values = counters_of(&store, &["--name", "c", "--at-mark", id], &counters, &log);
        let r = values[values.len() - 1];
        assert!(
            values.windows(2).all(|w| w[0] >= w[1]) && values[0] <= r + 1 && r <= rounds,
            "mark {id} is not one instant of every shard: counters {values:?}\n{log}"
        );
        seen.push(values);
    }
    eprintln!("marks' counters ({rounds} rounds written): {seen:?}");
    // Restores by time are each shard at T by its own arrival times: how far apart the shards
    // land is the cross-shard skew (docs/cli.md quotes it), in rounds of the writer.
    for t in instants {
        let at = at_arg(t);
        let v = counters_of(&store, &["--name", "c", "--at", &at], &counters, &log);
        let spread = v.iter().max().unwrap() - v.iter().min().unwrap();
        eprintln!(
            "--at T: counters {v:?}: shards {spread} round(s) apart, about {:.2} ms ({round_ms:.3} ms a round)",
            spread as f64 * round_ms
        );
        assert!(
            spread as f64 * round_ms < 1000.0,
            "shards a second apart: {v:?}"
        );
    }
    assert!(
        seen.iter().any(|v| v[0] > 0),
        "no mark fell inside the workload: {seen:?}"
    );
}

/// The counters' values in the whole-cluster restore `args` (0 for a key absent).
fn counters_of(
    store: &std::path::Path,
    args: &[&str],
    counters: &[(String, u16)],
    log: &str,
) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let rdb = dir.path().join("r.rdb");
    let mut all = args.to_vec();
    all.extend(["--rdb", rdb.to_str().unwrap()]);
    let out = restore_cli(store, &all);
    assert_eq!(out.code, Some(0), "{}\nagent log:\n{log}", out.all());
    let server = RedisProc::start_with_rdb(&rdb, &[]);
    let mut c = server.conn();
    counters
        .iter()
        .map(|(k, _)| match c.call(&["GET", k.as_str()]) {
            Reply::Bulk(None) => 0,
            r => r.text().parse().unwrap(),
        })
        .collect()
}

/// Scale-out while capturing: a primary added to the cluster (MEET) is adopted by the running
/// agent while it owns no slot, so its history starts empty before a key moves to it; then a
/// slot moves to it. A restore before it joined counts it empty (its first snapshot holds no
/// key), after the move it holds the slot's keys: the whole cluster's state at every point.
/// A second node added, adopted, then made a replica of the new shard is merged into that
/// shard, not captured twice.
#[test]
fn a_shard_added_mid_capture_is_adopted_and_restores_across_the_scale_out() {
    let mut cluster = Cluster::start_with(3, 0);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(
        cluster.nodes[0].port,
        &store,
        &["--cluster", "--name", "c", "--base-every", "0"],
    );
    workload(&cluster, "one", 30);
    cluster.wait_agent_caught_up(&agent);
    let state = cluster.state();
    let mut points = vec![("before the new primary", vouched_instant(&store), state)];

    // A new, empty primary joins.
    let seed = cluster.nodes[0].port.to_string();
    let meet = |n: &RedisProc| {
        n.conn().call(&["CLUSTER", "MEET", "127.0.0.1", &seed]);
    };
    let added = Cluster::node_proc();
    meet(&added);
    let added_port = added.port;
    cluster.nodes.push(added);
    cluster.wait_healthy();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent_link_ports(&cluster).contains(&added_port) {
        assert!(
            Instant::now() < deadline,
            "the agent did not adopt the new primary:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    workload(&cluster, "two", 30);
    cluster.wait_links_caught_up(4, &agent);
    let state = cluster.state();
    points.push(("new primary, no slot", vouched_instant(&store), state));

    // Slot {m} moves to it, and writes go on.
    let slot_m = cluster.call(&[b"CLUSTER", b"KEYSLOT", b"{m}"]).int();
    let from = owner_port(&cluster, slot_m);
    migrate_slot(&cluster, slot_m, from, added_port);
    cluster.wait_healthy();
    assert_eq!(owner_port(&cluster, slot_m), added_port);
    workload(&cluster, "three", 30);
    cluster.wait_links_caught_up(4, &agent);
    let state = cluster.state();
    assert!(
        key_state(&mut cluster.node(added_port).conn())
            .keys()
            .any(|k| k.starts_with(b"{m}")),
        "the slot's keys are on the new primary"
    );
    points.push(("after the slot moved", vouched_instant(&store), state));

    // A node added and adopted, then made a replica of the new shard: merged into it.
    let second = Cluster::node_proc();
    meet(&second);
    let second_port = second.port;
    cluster.nodes.push(second);
    cluster.wait_healthy();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.log_text().matches("; capturing it").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the agent did not adopt the second node:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = cluster.id(added_port);
    replicate(cluster.node(second_port), &id);
    cluster.wait_healthy();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent.log_text().contains("is part of shard") {
        assert!(
            Instant::now() < deadline,
            "the agent did not merge the second node's shard:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    workload(&cluster, "four", 30);
    cluster.wait_links_caught_up(4, &agent);
    let state = cluster.state();
    points.push(("after the merge", vouched_instant(&store), state));

    let info = info_json(&store);
    agent.stop();
    let log = agent.log_text();
    let src = info["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "c")
        .unwrap_or_else(|| panic!("no source c in {info}"));
    let shards = src["cluster"]["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 4, "the merged shard is not listed: {src}");
    let joined: Vec<_> = shards.iter().filter(|s| s["joined_ms"].is_u64()).collect();
    assert_eq!(joined.len(), 1, "{src}");
    assert!(
        joined[0]["label"].as_str().unwrap().starts_with('n'),
        "{src}"
    );
    for sh in shards {
        assert_eq!(sh["generations"].as_u64(), Some(1), "{sh}\n{log}");
    }
    // The shard that joined empty does not bound the cluster's window: it reaches back
    // before the new primary joined.
    let from = src["cluster"]["window"]["from_ms"].as_u64().unwrap();
    assert!(from <= points[0].1, "{src}");

    for (label, t, want) in &points {
        let got = restored_state(&store, &["--name", "c", "--at", &at_arg(*t)], &log);
        assert_eq!(
            got.len(),
            want.len(),
            "{label}: key count; agent log:\n{log}"
        );
        assert!(got == *want, "{label}: the restored keys differ");
    }
    let out = dry_run_at(&store, points[0].1);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("empty until its first snapshot"),
        "{}",
        out.stdout
    );
}

/// A shard that joined while the agent was stopped, and got keys before the agent saw it:
/// the next start adopts it, but its state before its first snapshot was never captured, so
/// a whole-cluster restore there is refused in one line naming the shard and the instant
/// from which the cluster restores; after that instant the restore is exact.
#[test]
fn a_shard_that_joined_unseen_with_keys_refuses_restores_before_it() {
    let mut cluster = Cluster::start_with(3, 0);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let args = ["--cluster", "--name", "c", "--base-every", "0"];
    let mut agent = Agent::start(cluster.nodes[0].port, &store, &args);
    workload(&cluster, "one", 30);
    cluster.wait_agent_caught_up(&agent);
    let before = vouched_instant(&store);
    agent.stop();

    let added = Cluster::node_proc();
    let seed = cluster.nodes[0].port.to_string();
    added.conn().call(&["CLUSTER", "MEET", "127.0.0.1", &seed]);
    let added_port = added.port;
    cluster.nodes.push(added);
    cluster.wait_healthy();
    let slot_m = cluster.call(&[b"CLUSTER", b"KEYSLOT", b"{m}"]).int();
    let from = owner_port(&cluster, slot_m);
    migrate_slot(&cluster, slot_m, from, added_port);
    cluster.wait_healthy();

    let mut agent = Agent::start(cluster.nodes[0].port, &store, &args);
    workload(&cluster, "two", 30);
    cluster.wait_links_caught_up(4, &agent);
    let want = cluster.state();
    let after = vouched_instant(&store);
    agent.stop();
    let log = agent.log_text();

    // As a time outside the window: a runtime refusal (exit 1), not bad usage.
    let out = dry_run_at(&store, before);
    assert_eq!(out.code, Some(1), "{}\n{log}", out.all());
    let line = out.stderr.trim();
    assert!(
        line.contains("already held keys at its first snapshot")
            && line.contains("restore at or after"),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    let got = restored_state(&store, &["--name", "c", "--at", &at_arg(after)], &log);
    assert!(
        got == want,
        "after the new shard's first snapshot: the keys differ"
    );
}

/// Valkey 9's atomic slot migration (CLUSTER MIGRATESLOTS: the slots' keys stream to the
/// target over a replication link, and ownership moves at once), mid-capture and with writes
/// going on during one of them: the whole cluster's key state at instants before, between and
/// after comes back exact.
#[test]
fn valkey9_atomic_slot_migration_mid_capture() {
    let Some(bin) = crate::commands::server_from("FLASHBACK_VALKEY9_SERVER") else {
        return;
    };
    let args = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "3000",
        "--repl-diskless-sync-delay",
        "0",
    ];
    let nodes: Vec<RedisProc> = (0..2).map(|_| RedisProc::start_bin(&bin, &args)).collect();
    nodes[0]
        .conn()
        .call(&["CLUSTER", "ADDSLOTSRANGE", "0", "8191"]);
    nodes[1]
        .conn()
        .call(&["CLUSTER", "ADDSLOTSRANGE", "8192", "16383"]);
    let seed = nodes[0].port.to_string();
    nodes[1]
        .conn()
        .call(&["CLUSTER", "MEET", "127.0.0.1", &seed]);
    let cluster = std::sync::Arc::new(Cluster { nodes });
    cluster.wait_healthy();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(
        cluster.nodes[0].port,
        &store,
        &["--cluster", "--name", "c", "--base-every", "0"],
    );
    vouched_instant(&store);
    workload(&cluster, "one", 40);
    cluster.wait_links_caught_up(2, &agent);
    let state = cluster.state();
    let mut points = vec![("before", vouched_instant(&store), state)];

    // The slot of {m} moves to the other primary.
    let migrate = |slots: (i64, i64), to: u16| {
        let from = owner_port(&cluster, slots.0);
        let to_id = cluster.id(to);
        let (a, b) = (slots.0.to_string(), slots.1.to_string());
        let r = cluster.node(from).conn().call(&[
            "CLUSTER",
            "MIGRATESLOTS",
            "SLOTSRANGE",
            &a,
            &b,
            "NODE",
            &to_id,
        ]);
        assert!(!r.is_error(), "MIGRATESLOTS: {r:?}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while owner_port(&cluster, slots.0) != to || owner_port(&cluster, slots.1) != to {
            assert!(Instant::now() < deadline, "the migration did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let slot_m = cluster.call(&[b"CLUSTER", b"KEYSLOT", b"{m}"]).int();
    let other = if owner_port(&cluster, slot_m) == cluster.nodes[0].port {
        cluster.nodes[1].port
    } else {
        cluster.nodes[0].port
    };
    migrate((slot_m, slot_m), other);
    cluster.wait_healthy();
    workload(&cluster, "two", 40);
    cluster.wait_links_caught_up(2, &agent);
    let state = cluster.state();
    points.push(("after {m} moved", vouched_instant(&store), state));

    // Half of the first node's slots move while a client writes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, stop) = (cluster.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                workload(&c, &format!("w{round}"), 6);
                round += 1;
            }
        })
    };
    let first = cluster.nodes[0].port;
    let second = cluster.nodes[1].port;
    let half = if owner_port(&cluster, 0) == first {
        (0, 4095)
    } else {
        (8192, 12287)
    };
    let to = if owner_port(&cluster, half.0) == first {
        second
    } else {
        first
    };
    migrate(half, to);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    cluster.wait_healthy();
    cluster.wait_links_caught_up(2, &agent);
    let state = cluster.state();
    points.push((
        "after a half moved under writes",
        vouched_instant(&store),
        state,
    ));
    agent.stop();
    let log = agent.log_text();

    for (label, t, want) in &points {
        let dir = tempfile::tempdir().unwrap();
        let rdb = dir.path().join("r.rdb");
        let at = at_arg(*t);
        let out = restore_cli(
            &store,
            &[
                "--name",
                "c",
                "--at",
                &at,
                "--redis-server",
                &bin,
                "--rdb",
                rdb.to_str().unwrap(),
            ],
        );
        assert_eq!(
            out.code,
            Some(0),
            "{label}: {}\nagent log:\n{log}",
            out.all()
        );
        let server = RedisProc::start_bin_with_rdb(&bin, &rdb, &[]);
        let got = key_state(&mut server.conn());
        assert_eq!(got.len(), want.len(), "{label}: key count\n{log}");
        assert!(got == *want, "{label}: the restored keys differ\n{log}");
    }
}
