//! Capture behind Sentinel (`capture --sentinel … --master-name …`): a primary, two replicas
//! and three Sentinels; a `SENTINEL FAILOVER`, then a kill -9 of the promoted primary, under
//! writes. The agent must follow both failovers by partial resync: one generation, and every
//! recorded instant (before, between and after) restores to the state the source had.

use crate::util::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MASTER: &str = "mymaster";

struct SentinelProc {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl SentinelProc {
    fn start(master_port: u16) -> SentinelProc {
        let dir = tempfile::tempdir().unwrap();
        for _attempt in 0..8 {
            let port = free_port();
            let conf = dir.path().join("sentinel.conf");
            // Sentinel rewrites its configuration file: it must be its own and writable.
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                     sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER} 2000\n\
                     sentinel failover-timeout {MASTER} 5000\n\
                     sentinel parallel-syncs {MASTER} 2\n",
                    dir = dir.path().display()
                ),
            )
            .unwrap();
            let mut child = die_with_parent(&mut Command::new(redis_server_bin()))
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run redis-server --sentinel");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break; // the port was taken meanwhile: try another
                }
                if let Ok(mut c) = Conn::connect(port) {
                    if c.try_call(&["PING"])
                        .is_ok_and(|r| r == Reply::Status(b"PONG".to_vec()))
                    {
                        return SentinelProc { port, child, dir };
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "Sentinel on {port} did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("Sentinel would not start");
    }

    fn call(&self, args: &[&str]) -> Reply {
        Conn::connect(self.port).unwrap().call(args)
    }

    fn master_port(&self) -> u16 {
        let r = self.call(&["SENTINEL", "get-master-addr-by-name", MASTER]);
        r.array()[1].text().parse().unwrap()
    }

    /// `SENTINEL master NAME` field.
    fn master_field(&self, field: &str) -> String {
        let r = self.call(&["SENTINEL", "master", MASTER]);
        let a = r.array();
        a.chunks(2)
            .find(|kv| kv[0].text() == field)
            .map(|kv| kv[1].text())
            .unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
    }
}

impl Drop for SentinelProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_burst(c: &mut Conn, tag: &str, n: usize) {
    let cmds: Vec<Vec<String>> = (0..n)
        .flat_map(|i| {
            [
                vec!["SET".into(), format!("{tag}:{i}"), format!("v{i}")],
                vec![
                    "HSET".into(),
                    format!("h:{tag}"),
                    format!("f{i}"),
                    "x".into(),
                ],
                vec!["INCR".into(), "counter".into()],
            ]
        })
        .collect();
    for r in c.pipeline(&cmds) {
        assert!(!r.is_error(), "{r:?}");
    }
}

fn role(p: &RedisProc) -> String {
    p.info_replication()
        .lines()
        .find_map(|l| l.strip_prefix("role:"))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Until every Sentinel names a primary other than `old` and that node says it is a master;
/// returns its index in `nodes`.
fn wait_new_primary(sentinels: &[SentinelProc], nodes: &[Option<RedisProc>], old: u16) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ports: Vec<u16> = sentinels.iter().map(SentinelProc::master_port).collect();
        if ports.iter().all(|p| *p == ports[0] && *p != old) {
            if let Some(i) = nodes
                .iter()
                .position(|n| n.as_ref().is_some_and(|n| n.port == ports[0]))
            {
                if role(nodes[i].as_ref().unwrap()) == "master" {
                    return i;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no failover within 30 s: Sentinels name {ports:?}; Sentinel log:\n{}",
            sentinels[0].log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Until each other live data node is a replica of `primary`, linked and at its offset (so a
/// kill of `primary` loses nothing the agent holds, and Sentinel has a good replica to promote).
fn wait_replicas_synced(nodes: &[Option<RedisProc>], primary: usize) {
    let p = nodes[primary].as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    for (i, n) in nodes.iter().enumerate() {
        let Some(n) = n.as_ref().filter(|_| i != primary) else {
            continue;
        };
        loop {
            let info = n.info_replication();
            if info.contains(&format!("master_port:{}", p.port))
                && info.contains("master_link_status:up")
                && n.master_repl_offset() == p.master_repl_offset()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {} did not sync with {}:\n{info}",
                n.port,
                p.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn follows_a_manual_failover_and_a_kill_9_in_one_generation() {
    let data = ["--repl-backlog-size", "16mb"];
    let m = RedisProc::start(&data);
    let replica = |m: &RedisProc| {
        let mp = m.port.to_string();
        RedisProc::start(&["--replicaof", "127.0.0.1", &mp, data[0], data[1]])
    };
    let mut nodes = vec![Some(replica(&m)), Some(replica(&m))];
    nodes.insert(0, Some(m));
    let m_port = nodes[0].as_ref().unwrap().port;
    let sentinels: Vec<SentinelProc> = (0..3).map(|_| SentinelProc::start(m_port)).collect();
    // Failover needs the Sentinels to know each other and both replicas.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sentinels.iter().all(|s| {
        s.master_field("num-other-sentinels") == "2"
            && s.master_field("num-slaves").parse::<u32>().unwrap_or(0) >= 2
    }) {
        assert!(
            Instant::now() < deadline,
            "Sentinels did not discover each other"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let list = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect::<Vec<_>>()
        .join(",");
    let store = tempfile::tempdir().unwrap();
    let store = store.path().join("store");
    // --source names no real node: behind Sentinel only its credentials count.
    let mut agent = Agent::start_url(
        "redis://127.0.0.1:1",
        m_port,
        &store,
        &["--sentinel", &list, "--master-name", MASTER],
    );
    let mut points = Vec::new();
    let mut primary = 0;
    {
        let p = nodes[primary].as_ref().unwrap();
        let mut c = p.conn();
        write_burst(&mut c, "before", 300);
        agent.wait_online(p);
        write_burst(&mut c, "before2", 300);
        // Past the first sync's uncertain interval, so the instant restores by time too.
        std::thread::sleep(Duration::from_millis(1200));
        points.push(record_point(&mut c, p, &mut agent, "before the failovers"));
    }

    // The agent vouches for an instant once a poll of the source's offset (every 100 ms)
    // follows it; a failover started sooner would leave the point just recorded inside the
    // failover's uncertain interval, where a restore by time rightly refuses (seen on CI:
    // evidence 5 ms before the point, the failover 80 ms after it). Three polls' worth:
    let vouched = || std::thread::sleep(Duration::from_millis(300));
    vouched();

    // 1. A manual failover, the old primary alive: it is demoted and reconnects as a replica.
    wait_replicas_synced(&nodes, primary);
    let r = sentinels[0].call(&["SENTINEL", "FAILOVER", MASTER]);
    assert!(!r.is_error(), "SENTINEL FAILOVER: {r:?}");
    primary = wait_new_primary(&sentinels, &nodes, m_port);
    {
        let p = nodes[primary].as_ref().unwrap();
        let mut c = p.conn();
        write_burst(&mut c, "between", 300);
        agent.wait_online(p);
        write_burst(&mut c, "between2", 300);
        std::thread::sleep(Duration::from_millis(1200));
        points.push(record_point(&mut c, p, &mut agent, "between the failovers"));
    }

    vouched();
    // 2. kill -9 of that primary once the others hold all it has (writes a killed primary
    // acknowledged but never replicated are lost by Redis itself, agent or not).
    wait_replicas_synced(&nodes, primary);
    let killed = nodes[primary].as_ref().unwrap().port;
    drop(nodes[primary].take()); // RedisProc's Drop is SIGKILL
    primary = wait_new_primary(&sentinels, &nodes, killed);
    {
        let p = nodes[primary].as_ref().unwrap();
        let mut c = p.conn();
        write_burst(&mut c, "after", 300);
        agent.wait_online(p);
        write_burst(&mut c, "after2", 300);
        std::thread::sleep(Duration::from_millis(1200));
        points.push(record_point(&mut c, p, &mut agent, "after the failovers"));
    }
    agent.stop();
    let log = agent.log_text();

    let info = info_json(&store);
    assert_eq!(
        json_generation_count(&info),
        Some(1),
        "both failovers must continue the one generation:\n{info:#}\nagent log:\n{log}"
    );
    assert_eq!(
        log.matches("continued generation").count(),
        2,
        "one partial resync per failover:\n{log}"
    );
    assert!(
        log.contains("+switch-master"),
        "switches are logged:\n{log}"
    );
    let store_s = store.display().to_string();
    let mut bad = Vec::new();
    for p in &points {
        let offset = p.offset.to_string();
        let at = at_arg(p.t_ms);
        for args in [["--at-offset", offset.as_str()], ["--at", at.as_str()]] {
            bad.extend(restore_mismatch(&store_s, &[], &p.label, &p.state, &args));
        }
    }
    assert!(bad.is_empty(), "{}\nagent log:\n{log}", bad.join("\n"));
    if std::env::var_os("SHOW_SENTINEL_LOGS").is_some() {
        for s in &sentinels {
            eprintln!("sentinel {}:\n{}", s.port, s.log());
        }
    }
}

/// Sentinels that do not know the master name: one clear line, at once.
#[test]
fn an_unknown_master_name_is_one_clear_error() {
    let m = RedisProc::start(&[]);
    let s = SentinelProc::start(m.port);
    let dead = free_port();
    let store = tempfile::tempdir().unwrap();
    let list = format!("127.0.0.1:{dead},127.0.0.1:{}", s.port);
    let out = run_flashback(
        &[
            "capture",
            "--sentinel",
            &list,
            "--master-name",
            "nosuch",
            "--store",
            &store.path().join("s").display().to_string(),
        ],
        Duration::from_secs(30),
    );
    assert_ne!(out.code, Some(0));
    let line = one_error_line(&out);
    assert!(
        line.contains("know no master named 'nosuch'") && line.contains("--master-name"),
        "{line}"
    );
}

/// No Sentinel answers: with `--source` beside `--sentinel`, its host is captured meanwhile
/// (said loudly); without it, one clear line.
#[test]
fn the_source_host_is_a_fallback_while_no_sentinel_answers() {
    let m = RedisProc::start(&[]);
    let (dead1, dead2) = (free_port(), free_port());
    let list = format!("127.0.0.1:{dead1},127.0.0.1:{dead2}");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let mut agent = Agent::start(
        m.port,
        &store,
        &["--sentinel", &list, "--master-name", "mymaster"],
    );
    agent.wait_online(&m);
    let mut c = m.conn();
    write_burst(&mut c, "fb", 200);
    agent.wait_caught_up(&m);
    let want = state(&mut c);
    let got = restore_rdb(&store, &["--latest"]);
    assert_eq!(
        got, want,
        "a restore of the fallback capture differs from the source"
    );
    agent.stop();
    let log = agent.log_text();
    assert!(
        log.contains("no Sentinel answered") && log.contains("capturing --source 127.0.0.1:"),
        "the agent must say it captures the --source host because no Sentinel answered:\n{log}"
    );

    let out = run_flashback(
        &[
            "capture",
            "--sentinel",
            &list,
            "--master-name",
            "mymaster",
            "--store",
            &dir.path().join("t").display().to_string(),
        ],
        Duration::from_secs(30),
    );
    assert_ne!(out.code, Some(0));
    let line = one_error_line(&out);
    assert!(line.contains("no Sentinel answered"), "{line}");
}

/// The agent captures a replica (`--source` of a replica, no `--sentinel`: the primary is left
/// alone) of a Sentinel-managed set, through two failovers (`replica-priority` makes
/// Sentinel's choices certain). First the agent's node is promoted: the link's upstream
/// becomes the primary itself, and the generation continues by PSYNC. Then another replica is
/// promoted and the agent's node, now a demoted primary, is repointed to it: Redis itself
/// full-resyncs a demoted primary that holds bytes the promoted replica lacks (its PINGs to
/// replicas after the promotion), rebuilding the node's dataset under the link, so continuity
/// is impossible there: a new generation, the gap named in the log. Every point on either side
/// restores exactly.
#[test]
fn a_captured_replica_continues_when_promoted_and_names_the_gap_when_rebuilt() {
    let data = ["--repl-backlog-size", "16mb"];
    let m = RedisProc::start(&[data[0], data[1], "--replica-priority", "100"]);
    let replica = |m: &RedisProc, priority: &str| {
        let mp = m.port.to_string();
        RedisProc::start(&[
            "--replicaof",
            "127.0.0.1",
            &mp,
            data[0],
            data[1],
            "--replica-priority",
            priority,
        ])
    };
    let nodes = vec![Some(m)];
    let r1 = replica(nodes[0].as_ref().unwrap(), "10");
    let r2 = replica(nodes[0].as_ref().unwrap(), "50");
    let mut nodes = nodes;
    nodes.push(Some(r1));
    nodes.push(Some(r2));
    let m_port = nodes[0].as_ref().unwrap().port;
    let captured = nodes[1].as_ref().unwrap().port;
    let sentinels: Vec<SentinelProc> = (0..3).map(|_| SentinelProc::start(m_port)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sentinels.iter().all(|s| {
        s.master_field("num-other-sentinels") == "2"
            && s.master_field("num-slaves").parse::<u32>().unwrap_or(0) >= 2
    }) {
        assert!(
            Instant::now() < deadline,
            "Sentinels did not discover each other"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let store = tempfile::tempdir().unwrap();
    let store = store.path().join("store");
    let url = format!("redis://127.0.0.1:{captured}");
    let mut agent = Agent::start_url(&url, captured, &store, &[]);
    let mut points = Vec::new();
    let mut primary = 0;
    let point = |nodes: &[Option<RedisProc>], primary: usize, agent: &mut Agent, label: &str| {
        let p = nodes[primary].as_ref().unwrap();
        let mut c = p.conn();
        write_burst(&mut c, label, 300);
        let node = nodes[1].as_ref().unwrap();
        agent.wait_online(node);
        write_burst(&mut c, &format!("{label}2"), 300);
        // Past a reconnect's uncertain interval, so the instant restores by time too.
        std::thread::sleep(Duration::from_millis(1200));
        let offset = parse_info(&c.call(&["INFO", "replication"]).text()).master_offset;
        let state = state(&mut c);
        wait_agent_at(node, offset, agent);
        let t_ms = now_ms();
        std::thread::sleep(Duration::from_millis(300));
        RecordedPoint {
            label: label.to_string(),
            t_ms,
            offset,
            state,
        }
    };
    points.push(point(&nodes, primary, &mut agent, "before"));
    for (step, expect) in [("promoted", 1usize), ("repointed", 2usize)] {
        wait_replicas_synced(&nodes, primary);
        let old = nodes[primary].as_ref().unwrap().port;
        let r = sentinels[0].call(&["SENTINEL", "FAILOVER", MASTER]);
        assert!(!r.is_error(), "SENTINEL FAILOVER: {r:?}");
        primary = wait_new_primary(&sentinels, &nodes, old);
        assert_eq!(primary, expect, "Sentinel chose by replica-priority");
        points.push(point(&nodes, primary, &mut agent, step));
    }
    // A full resync of the agent's node comes once its new primary's snapshot is ready: wait a
    // while for it, then take a point after it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.log_text().matches("snapshot stored").count() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    points.push(point(&nodes, primary, &mut agent, "after"));
    agent.stop();
    let log = agent.log_text();
    let info = info_json(&store);
    assert_eq!(
        log.matches("continued generation").count(),
        1,
        "the promotion of the agent's node continues the generation:\n{log}"
    );
    let gens = json_generation_count(&info);
    let resynced = log.contains("full resync: receiving the snapshot at offset")
        && log.matches("full resync: receiving").count() == 2;
    if resynced {
        // The demoted primary was rebuilt by a full resync: the gap is named, one new
        // generation.
        assert!(log.contains("gap: the primary could not continue"), "{log}");
        assert_eq!(gens, Some(2), "{info:#}\nagent log:\n{log}");
        // The point taken while the node was being rebuilt is in the gap (unless the new
        // snapshot is exactly at it): refused, or exact, never a wrong state.
        let gap = points.remove(2);
        let offset = gap.offset.to_string();
        if let Ok(got) =
            try_restore_rdb_env(&store.display().to_string(), &["--at-offset", &offset], &[])
        {
            assert_eq!(
                got, gap.state,
                "a point in the gap restored to another state"
            );
        }
    } else {
        // A demotion Redis could bridge by partial resync (no extra byte on the old primary).
        assert_eq!(gens, Some(1), "{info:#}\nagent log:\n{log}");
    }
    let store_s = store.display().to_string();
    let mut bad = Vec::new();
    for p in &points {
        let offset = p.offset.to_string();
        let at = at_arg(p.t_ms);
        for args in [["--at-offset", offset.as_str()], ["--at", at.as_str()]] {
            bad.extend(restore_mismatch(&store_s, &[], &p.label, &p.state, &args));
        }
    }
    assert!(bad.is_empty(), "{}\nagent log:\n{log}", bad.join("\n"));
}

/// Until `node` reports the agent's link (listening port 0) online at `offset` or past it.
fn wait_agent_at(node: &RedisProc, offset: u64, agent: &mut Agent) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = node.info_replication();
        let at = info
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains("port=0,") && l.contains("online"))
            .filter_map(|l| l.split(',').find_map(|f| f.strip_prefix("offset=")))
            .filter_map(|o| o.parse::<u64>().ok())
            .max();
        if at.is_some_and(|a| a >= offset) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent's link on {} did not reach offset {offset}:\n{info}\nagent log:\n{}",
            node.port,
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}
