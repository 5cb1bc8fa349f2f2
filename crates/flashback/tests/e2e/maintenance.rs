//! The agent's own housekeeping: `--base-every` (compaction) and `--keep` (retention) run
//! beside capture, on the store, while writes continue. Afterwards the store has new bases,
//! has dropped what the window no longer needs, and every recent instant restores exactly.

use crate::util::*;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::time::{Duration, Instant};

fn burst(conn: &mut Conn, round: usize) {
    // ~1.2 MB of incompressible values a round, so 1 MiB segments keep sealing.
    let mut rng = SmallRng::seed_from_u64(round as u64);
    let cmds: Vec<Vec<Vec<u8>>> = (0..1200)
        .map(|i| {
            let mut value = vec![0u8; 1000];
            rng.fill_bytes(&mut value);
            vec![
                b"SET".to_vec(),
                format!("k{}", (round * 1200 + i) % 5000).into_bytes(),
                value,
            ]
        })
        .collect();
    for r in conn.pipeline(&cmds) {
        assert!(!r.is_error(), "{r:?}");
    }
    conn.call(&["INCR", "rounds"]);
}

#[test]
fn the_agent_compacts_and_prunes_while_capturing() {
    let source = RedisProc::start(&["--repl-diskless-sync-delay", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(
        source.port,
        &store,
        &[
            "--segment-mib",
            "1",
            "--base-every",
            "2s",
            "--keep",
            "6s",
            "--redis-server",
            &redis_server_bin(),
        ],
    );
    agent.wait_online(&source);
    let mut conn = source.conn();
    let started = Instant::now();
    let mut points = Vec::new();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(14) {
        burst(&mut conn, round);
        round += 1;
        agent.wait_caught_up(&source);
        points.push((now_ms(), state(&mut conn)));
        std::thread::sleep(Duration::from_millis(400));
    }
    let prom = std::fs::read_to_string(
        store
            .join("sources")
            .join(format!("127.0.0.1-{}", source.port))
            .join("agent.prom"),
    )
    .expect("the agent writes its metrics file");
    assert!(prom.contains("flashback_durable_offset{source="), "{prom}");
    assert!(prom.contains("flashback_lag_seconds{source="), "{prom}");
    let src_label = format!("source=\"127.0.0.1-{}\"", source.port);
    assert!(
        prom.contains(&format!("flashback_link_up{{{src_label}}} 1"))
            && prom.contains(&format!(
                "flashback_link_info{{{src_label},node=\"127.0.0.1:{}\"}} 1",
                source.port
            )),
        "{prom}"
    );
    agent.stop();
    let log = agent.log_text();

    let info = info_json(&store);
    let gen = &info["sources"][0]["generations"][0];
    let window_from = info["sources"][0]["windows"][0]["from_ms"]
        .as_u64()
        .unwrap();
    let bases = std::fs::read_dir(generation_dirs(&store)[0].join("base"))
        .unwrap()
        .count();
    assert!(
        bases >= 2,
        "compaction should have stored new bases (found {bases}); log:\n{log}"
    );
    assert!(
        log.contains("retention:"),
        "retention should have pruned; log:\n{log}"
    );
    assert!(
        window_from > points[0].0,
        "the window should no longer reach the first instant after pruning: {gen:#}"
    );
    // Every instant inside the window restores exactly, and one before it is refused.
    let inside: Vec<_> = points.iter().filter(|(t, _)| *t >= window_from).collect();
    assert!(
        inside.len() >= 3,
        "too few instants inside the window: {}",
        inside.len()
    );
    for (t, s) in inside.iter().rev().take(4) {
        assert_eq!(
            &restore_rdb(&store, &["--at", &at_arg(*t)]),
            s,
            "instant {t}"
        );
    }
    let before = try_restore_rdb(&store, &["--at", &at_arg(points[0].0)]);
    assert!(before.is_err(), "an instant pruned away must be refused");
}
