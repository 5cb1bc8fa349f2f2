//! Capture of a Redis Cluster (`capture --cluster`): a 3-primary + 3-replica cluster, one
//! agent for every shard, a `CLUSTER FAILOVER` and a slot migration (SETSLOT + MIGRATE)
//! mid-capture; the whole cluster's key state at several instants must come back from one
//! restored RDB, and `--shard` restores one shard.

mod util;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use util::*;

struct Cluster {
    nodes: Vec<RedisProc>,
}

impl Cluster {
    fn start() -> Cluster {
        let nodes: Vec<RedisProc> = (0..6)
            .map(|_| {
                RedisProc::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "3000",
                ])
            })
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
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

    /// Every node says cluster_state:ok and every replica's link is up and caught up.
    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        'again: loop {
            assert!(Instant::now() < deadline, "the cluster did not settle");
            std::thread::sleep(Duration::from_millis(100));
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

    /// Until every replication link of the agent (listening-port 0) is caught up with its
    /// node's offset, and there is one per shard.
    fn wait_agent_caught_up(&self) {
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
            if links == 3 && behind == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not catch up: {links} links, {behind} behind"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
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

fn restored_state(store: &std::path::Path, args: &[&str]) -> BTreeMap<Vec<u8>, String> {
    let dir = tempfile::tempdir().unwrap();
    let rdb = dir.path().join("r.rdb");
    let mut all: Vec<&std::ffi::OsStr> = vec!["restore".as_ref(), "--store".as_ref()];
    all.push(store.as_os_str());
    all.extend(args.iter().map(|a| a.as_ref() as &std::ffi::OsStr));
    all.extend(["--rdb".as_ref(), rdb.as_os_str()]);
    let out = run_flashback(&all, Duration::from_secs(120));
    assert_eq!(out.code, Some(0), "restore failed:\n{}", out.all());
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
    workload(&cluster, "one", 60);
    cluster.wait_agent_caught_up();
    let mut points = vec![("T1", now_ms(), cluster.state())];
    std::thread::sleep(Duration::from_millis(20));

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
    workload(&cluster, "two", 60);
    cluster.wait_agent_caught_up();
    // The agent's own evidence (its poller, every 100 ms) closes the uncertain interval a
    // reconnect opened a little after the primaries show it caught up: a point recorded
    // before that is rightly refused by a restore by time.
    std::thread::sleep(Duration::from_millis(400));
    points.push(("T2", now_ms(), cluster.state()));
    std::thread::sleep(Duration::from_millis(20));

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
    let (from_id, to_id) = (cluster.id(from), cluster.id(to));
    let s = slot_m.to_string();
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
    cluster.wait_healthy();
    workload(&cluster, "three", 60);
    cluster.wait_agent_caught_up();
    // The agent's own evidence (its poller, every 100 ms) closes the uncertain interval a
    // reconnect opened a little after the primaries show it caught up: a point recorded
    // before that is rightly refused by a restore by time.
    std::thread::sleep(Duration::from_millis(400));
    points.push(("T3", now_ms(), cluster.state()));

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
        let got = restored_state(&store, &["--name", "c", "--at", &at_arg(*t)]);
        assert_eq!(
            got.len(),
            want.len(),
            "{label}: key count; agent log:\n{log}"
        );
        assert!(got == *want, "{label}: the restored keys differ");
    }
    // One shard alone: its keys only, a strict part of the whole.
    let first = shards[0]["label"].as_str().unwrap().to_string();
    let one = restored_state(&store, &["--name", "c", "--shard", &first, "--latest"]);
    let whole = &points[2].2;
    assert!(!one.is_empty() && one.len() < whole.len());
    assert!(one.iter().all(|(k, v)| whole.get(k) == Some(v)));
    // One generation per shard: the failover continued by partial resync.
    for sh in shards {
        assert_eq!(sh["generations"].as_u64(), Some(1), "{sh}\n{log}");
    }
    eprintln!("cluster test: {:.1} s", started.elapsed().as_secs_f64());
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
