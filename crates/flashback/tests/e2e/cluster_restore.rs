//! Restore into any shape: `--to` a Redis Cluster (keys routed by slot, MOVED followed, a
//! source's db 3 refused without `--db-map 3:0`), and `--serve-cluster` (a new local cluster,
//! left running, stopped by the pids it printed). Real redis-server processes throughout; every
//! key of the cluster compared (type, DEBUG DIGEST-VALUE, PEXPIRETIME) with the source at T.

use crate::util::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// (type, value digest, absolute expiry) of every key.
type KeyStates = BTreeMap<Vec<u8>, (String, String, i64)>;

const NODE_ARGS: &[&str] = &[
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "5000",
    // The smallest allowed: the big keys below go element by element, on the right node.
    "--proto-max-bulk-len",
    "1mb",
];

fn key_states(c: &mut Conn, keys: &[Vec<u8>]) -> KeyStates {
    let mut out = KeyStates::new();
    for k in keys {
        let kind = c.call(&[&b"TYPE"[..], k]).text();
        let digest = c.call(&[&b"DEBUG"[..], b"DIGEST-VALUE", k]);
        let digest = digest.array().first().map(|d| d.text()).unwrap_or_default();
        let exp = c.call(&[&b"PEXPIRETIME"[..], k]).int();
        out.insert(k.clone(), (kind, digest, exp));
    }
    out
}

fn all_keys(c: &mut Conn) -> Vec<Vec<u8>> {
    c.call(&["KEYS", "*"])
        .array()
        .iter()
        .map(|k| k.bytes().to_vec())
        .collect()
}

/// The source's db 0, then db 3 mapped onto it (a name in both keeps db 0's: it is copied
/// first, and the copy skips keys the target already holds).
fn source_states(c: &mut Conn) -> KeyStates {
    c.call(&["SELECT", "3"]);
    let k3 = all_keys(c);
    let mut s = key_states(c, &k3);
    c.call(&["SELECT", "0"]);
    let k0 = all_keys(c);
    s.extend(key_states(c, &k0));
    s
}

/// Every key the primaries among `ports` hold.
fn cluster_states(ports: &[u16]) -> KeyStates {
    let mut s = KeyStates::new();
    for &p in ports {
        let mut c = Conn::connect(p).unwrap();
        if c.call(&["INFO", "replication"])
            .text()
            .contains("role:slave")
        {
            continue;
        }
        let keys = all_keys(&mut c);
        s.extend(key_states(&mut c, &keys));
    }
    s
}

fn info_field(text: &str, field: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// Three cluster-enabled nodes, slots spread evenly, formed and `cluster_state:ok`.
fn three_node_cluster() -> Vec<RedisProc> {
    let nodes: Vec<RedisProc> = (0..3).map(|_| RedisProc::start(NODE_ARGS)).collect();
    for (i, n) in nodes.iter().enumerate() {
        let mut c = n.conn();
        c.call(&["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()]);
        let (lo, hi) = (i * 16384 / 3, (i + 1) * 16384 / 3 - 1);
        let r = c.call(&["CLUSTER", "ADDSLOTSRANGE", &lo.to_string(), &hi.to_string()]);
        assert!(!r.is_error(), "{r:?}");
    }
    let mut c0 = nodes[0].conn();
    for n in &nodes[1..] {
        c0.call(&["CLUSTER", "MEET", "127.0.0.1", &n.port.to_string()]);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in &nodes {
        let mut c = n.conn();
        loop {
            let info = c.call(&["CLUSTER", "INFO"]).text();
            if info_field(&info, "cluster_state").as_deref() == Some("ok")
                && info_field(&info, "cluster_known_nodes").as_deref() == Some("3")
            {
                break;
            }
            assert!(Instant::now() < deadline, "cluster did not form: {info}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    nodes
}

/// Several types, TTLs, hash tags, two keys above 1 MB, and db 3 (with one name also in db 0).
fn workload(c: &mut Conn) {
    let far = (now_ms() + 3_600_000).to_string();
    let mut cmds: Vec<Vec<String>> = Vec::new();
    for i in 0..400 {
        let v = |s: &str| s.to_string();
        cmds.push(vec![v("SET"), format!("k:{i}"), format!("value-{i}")]);
        if i % 7 == 0 {
            cmds.push(vec![v("PEXPIREAT"), format!("k:{i}"), far.clone()]);
        }
        if i % 10 == 0 {
            cmds.push(vec![
                v("HSET"),
                format!("h:{i}"),
                v("a"),
                v("1"),
                v("b"),
                v("2"),
            ]);
            cmds.push(vec![v("RPUSH"), format!("l:{i}"), v("x"), v("y"), v("z")]);
            cmds.push(vec![v("SADD"), format!("s:{i}"), v("m1"), v("m2")]);
            cmds.push(vec![
                v("ZADD"),
                format!("z:{i}"),
                v("1"),
                v("a"),
                v("2.5"),
                v("b"),
            ]);
            cmds.push(vec![v("XADD"), format!("x:{i}"), v("*"), v("f"), v("v")]);
            cmds.push(vec![v("SET"), format!("{{user{i}}}:name"), v("n")]);
            cmds.push(vec![v("SET"), format!("{{user{i}}}:mail"), v("m")]);
        }
    }
    for i in 0..20 {
        cmds.push(vec![
            "SET".into(),
            format!("{{mv}}{i}"),
            format!("moved-{i}"),
        ]);
    }
    c.pipeline(&cmds);
    // Uncompressible, so their DUMP is above the nodes' 1 MB proto-max-bulk-len.
    let mut x = 0x2545f4914f6cdd1du64;
    let mut noise = |n: usize| -> String {
        (0..n / 16)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{x:016x}")
            })
            .collect()
    };
    // (A string cannot be: above proto-max-bulk-len it is refused, as it should be.)
    let mut rpush = vec!["RPUSH".to_string(), "big:list".into()];
    rpush.extend((0..300).map(|_| noise(5000)));
    c.call(&rpush);
    c.call(&["PEXPIREAT", "big:list", &far]);
    let fields: Vec<String> = (0..300)
        .flat_map(|i| [format!("f{i}"), noise(5000)])
        .collect();
    let mut hset = vec!["HSET".to_string(), "big:hash".into()];
    hset.extend(fields);
    c.call(&hset);
    c.call(&["SELECT", "3"]);
    for i in 0..30 {
        c.call(&["SET", &format!("d3:{i}"), &format!("in db 3 {i}")]);
    }
    c.call(&["SET", "k:1", "db 3's k:1, skipped: db 0 has it"]);
    c.call(&["SELECT", "0"]);
}

fn restore(store: &str, at: &str, out: &[&str]) -> Output {
    let mut args = vec![
        "restore",
        "--store",
        store,
        "--at",
        at,
        "--progress",
        "none",
    ];
    args.extend_from_slice(out);
    run_flashback(&args, Duration::from_secs(120))
}

fn assert_equal(want: &KeyStates, got: &KeyStates, what: &str) {
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    let differ: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .map(|(k, _)| k)
        .take(5)
        .collect();
    assert!(
        want == got,
        "{what}: {} keys wanted, {} found; missing {missing:?}, differing {differ:?}",
        want.len(),
        got.len()
    );
}

/// A base port whose `n` ports and their cluster bus ports (10000 above) are free.
pub(crate) fn free_cluster_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let base = 20000 + (free_port() % 20000);
        let ok = (0..n).all(|i| {
            [base + i, base + i + 10000]
                .iter()
                .all(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        });
        if ok {
            return base;
        }
    }
    panic!("no free port range for a cluster");
}

/// Connects to what `--serve-cluster` printed, checks it, and stops it by its pids.
fn check_served(out: &Output, port: u16, nodes: usize, want: &KeyStates) {
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains(&format!("redis-cli -c -p {port}")),
        "{}",
        out.all()
    );
    let pids: Vec<i32> = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("stop:    kill "))
        .expect("a stop line")
        .split("(or")
        .next()
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), nodes, "{}", out.stdout);
    let dirs: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| l.split(", dir ").nth(1))
        .map(|d| d.trim_end_matches(')').to_string())
        .collect();
    assert_eq!(dirs.len(), nodes);
    let ports: Vec<u16> = (0..nodes as u16).map(|i| port + i).collect();
    for &p in &ports {
        let info = Conn::connect(p).unwrap().call(&["CLUSTER", "INFO"]).text();
        assert_eq!(
            info_field(&info, "cluster_state").as_deref(),
            Some("ok"),
            "{info}"
        );
        assert_eq!(
            info_field(&info, "cluster_known_nodes"),
            Some(nodes.to_string())
        );
    }
    assert_equal(want, &cluster_states(&ports), "--serve-cluster");
    // Replicas hold what their primary holds.
    for &p in &ports {
        let mut c = Conn::connect(p).unwrap();
        let repl = c.call(&["INFO", "replication"]).text();
        if let Some(mp) = info_field(&repl, "master_port") {
            let mp: u16 = mp.parse().unwrap();
            let theirs = Conn::connect(mp).unwrap().call(&["DBSIZE"]).int();
            assert_eq!(c.call(&["DBSIZE"]).int(), theirs, "replica {p} of {mp}");
            assert!(theirs > 0);
        }
    }
    let st = std::process::Command::new("kill")
        .args(pids.iter().map(|p| p.to_string()))
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    for &pid in &pids {
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "pid {pid} still runs after kill");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for d in dirs {
        assert!(std::path::Path::new(&d).join("nodes.conf").is_file(), "{d}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn restore_into_clusters_of_any_shape() {
    let source = RedisProc::start(&[]);
    let store = tempfile::tempdir().unwrap();
    let store_s = store.path().to_str().unwrap().to_string();
    let mut agent = Agent::start(source.port, store.path(), &[]);
    agent.wait_online(&source);
    let mut c = source.conn();
    workload(&mut c);
    let want = source_states(&mut c);
    let point = record_point(&mut c, &source, &mut agent, "T");
    // After T: none of this may reach the restores.
    c.call(&["SET", "k:2", "after T"]);
    c.call(&["DEL", "k:3", "h:10"]);
    c.call(&["SET", "late", "after T"]);
    agent.wait_caught_up(&source);
    let at = at_arg(point.t_ms);

    // db 3 without --db-map: refused, nothing written.
    let cluster = three_node_cluster();
    let url = cluster[0].url();
    let out = restore(&store_s, &at, &["--to", &url]);
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stderr.contains("db 3 (31 keys)") && out.stderr.contains("--db-map 3:0"),
        "{}",
        out.all()
    );
    for n in &cluster {
        assert_eq!(n.conn().call(&["DBSIZE"]).int(), 0);
    }

    // With --db-map 3:0: every key on its slot's primary, equal to the source at T.
    let t0 = Instant::now();
    let out = restore(&store_s, &at, &["--to", &url, "--db-map", "3:0"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("the target holds the restore"),
        "{}",
        out.all()
    );
    assert!(
        out.stdout.contains(", 1 skipped, 0 failed"),
        "{}",
        out.all()
    );
    assert!(
        out.stdout.contains("2 written element by element"),
        "{}",
        out.all()
    );
    let ports: Vec<u16> = cluster.iter().map(|n| n.port).collect();
    assert_equal(&want, &cluster_states(&ports), "--to a cluster");
    for n in &cluster {
        assert!(
            n.conn().call(&["DBSIZE"]).int() > 100,
            "keys spread over every node"
        );
    }
    eprintln!("restore --to a 3-primary cluster: {:?}", t0.elapsed());
    drop(cluster);

    // MOVED: the slot of {mv} changes hands after the restore read its map (from the third
    // node) and before its first write lands (the primaries pause writes until then).
    let cluster = three_node_cluster();
    let slot = cluster[0]
        .conn()
        .call(&["CLUSTER", "KEYSLOT", "{mv}"])
        .int();
    let owner = ((slot as usize) * 3 / 16384).min(2);
    let (from, to) = (&cluster[owner], &cluster[(owner + 1) % 3]);
    for n in &cluster {
        n.conn().call(&["CLIENT", "PAUSE", "30000", "WRITE"]);
    }
    let url3 = cluster[2].url();
    let store2 = store_s.clone();
    let at2 = at.clone();
    let run =
        std::thread::spawn(move || restore(&store2, &at2, &["--to", &url3, "--db-map", "3:0"]));
    let mut c3 = cluster[2].conn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c3
        .call(&["INFO", "commandstats"])
        .text()
        .contains("cmdstat_cluster|slots:")
    {
        assert!(
            Instant::now() < deadline,
            "the restore never read the slot map"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let to_id = to.conn().call(&["CLUSTER", "MYID"]).text();
    let s = slot.to_string();
    to.conn().call(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
    to.conn().call(&["CLUSTER", "BUMPEPOCH"]);
    from.conn()
        .call(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
    for n in &cluster {
        n.conn().call(&["CLIENT", "UNPAUSE"]);
    }
    let out = run.join().unwrap();
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("redirected by the cluster"),
        "{}",
        out.all()
    );
    let ports: Vec<u16> = cluster.iter().map(|n| n.port).collect();
    assert_equal(&want, &cluster_states(&ports), "--to a cluster, MOVED");
    let on_to = to.conn().call(&["GET", "{mv}7"]).text();
    assert_eq!(on_to, "moved-7");
    drop(cluster);

    // --serve-cluster: 2 primaries, then 2 primaries with a replica each.
    for (primaries, replicas) in [(2u16, 0u16), (2, 1)] {
        let nodes = (primaries * (1 + replicas)) as usize;
        let port = free_cluster_ports(nodes as u16);
        let (p, n, r) = (
            port.to_string(),
            primaries.to_string(),
            replicas.to_string(),
        );
        let mut out = vec!["--serve-cluster", &p, "--primaries", &n, "--db-map", "3:0"];
        if replicas > 0 {
            out.extend(["--replicas", &r]);
        }
        let t0 = Instant::now();
        let got = restore(&store_s, &at, &out);
        eprintln!("--serve-cluster {primaries}+{replicas}: {:?}", t0.elapsed());
        check_served(&got, port, nodes, &want);
    }
    agent.stop();
}
